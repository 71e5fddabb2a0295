"""websockify as a standalone console proxy, admitting only the portal's console tickets.

Connections come to ws://HOST:PORT/?token=<ticket>; the ticket, never the client, names the
target. There is no file serving (websockify's --web is never set), and tokens are kept out
of its logs.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from django.db import connections
from websockify.websocketproxy import ProxyRequestHandler, WebSocketProxy

from console.models import ConsoleSession
from console.sessions import console_session_end, console_session_start
from console.tickets import TicketRefused, console_ticket_admit
from portal.logsafety import redact_tokens


class TicketTokens:
    """websockify's token-plugin contract: token -> (host, port), or None."""

    def lookup(self, token: str) -> tuple[str, int] | None:
        try:
            ticket = console_ticket_admit(token=token)
        except TicketRefused:
            return None
        return ticket.address, ticket.port


class TicketProxyRequestHandler(ProxyRequestHandler):
    """websockify's handler, admitting tickets itself so refusals say why and sessions are recorded."""

    ticket = None
    session_id = None
    bytes_to_client = 0
    bytes_from_client = 0

    def get_target(self, target_plugin):
        # websockify forks a process per connection: never share the parent's DB connection.
        connections.close_all()
        token = parse_qs(urlsplit(self.path).query).get("token", [""])[0]
        try:
            self.ticket = console_ticket_admit(token=token)
        except TicketRefused as refused:
            # The token stays out of the message (websockify logs it).
            raise self.server.EClose(f"console ticket refused: {refused.refusal.message}") from None
        return self.ticket.address, self.ticket.port

    def new_websocket_client(self):
        session = console_session_start(
            ticket=self.ticket, via=ConsoleSession.Via.WEBSOCKIFY, client_address=self.client_address[0]
        )
        # Each session is a process of its own: holding a database connection for its whole
        # life would run a database server out of connections with a few hundred sessions.
        connections.close_all()
        reason = "closed"
        try:
            super().new_websocket_client()
        except self.CClose as close:
            reason = str(close.args[1]) if len(close.args) > 1 else "closed"
            raise
        except Exception as exc:  # noqa: BLE001 - recorded, then websockify reports it
            reason = f"error: {type(exc).__name__}"
            raise
        finally:
            console_session_end(
                session_id=session.pk,
                bytes_to_client=self.bytes_to_client,
                bytes_from_client=self.bytes_from_client,
                reason=reason,
            )

    def send_frames(self, bufs=None):
        self.bytes_to_client += sum(len(buf) for buf in bufs or ())
        return super().send_frames(bufs)

    def recv_frames(self):
        bufs, closed = super().recv_frames()
        self.bytes_from_client += sum(len(buf) for buf in bufs)
        return bufs, closed

    def log_message(self, format, *args):
        # websockify logs every request's path, and the path carries the ticket.
        super().log_message("%s", redact_tokens(format % args))


def websockify_proxy(host: str, port: int, *, verbose: bool = False) -> WebSocketProxy:
    """A websockify server for console tickets, not yet started."""
    connections.close_all()
    return WebSocketProxy(
        RequestHandlerClass=TicketProxyRequestHandler,
        listen_host=host,
        listen_port=port,
        token_plugin=TicketTokens(),
        web=None,  # never serve files
        verbose=verbose,
    )

"""websockify as a standalone console proxy, admitting only the portal's console tickets.

Connections come to ws://HOST:PORT/?token=<ticket>; the ticket, never the client, names the
target, and only tickets issued for this proxy to the page origin now connecting are admitted.
There is no file serving (websockify's --web is never set), and tokens are kept out of its
logs. Each connection is a process of its own; websockify's heartbeat (every
CONSOLE_RECHECK_SECONDS) doubles as the check that the user's right to the console still holds.
"""

from __future__ import annotations

import multiprocessing
import socket
import subprocess
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.db import connections
from websockify.websocketproxy import ProxyRequestHandler, WebSocketProxy

from console.guard import recheck_one
from console.hypervisor.ssh import ssh_options
from console.metrics import REFUSALS
from console.models import ConsoleSession, ConsoleTicket
from console.origins import origin_normalize
from console.sessions import console_session_end, console_session_start
from console.tickets import Refusal, TicketRefused, console_ticket_admit
from portal.logsafety import redact_tokens

CLOSE_TRY_AGAIN_LATER = 1013


class TicketTokens:
    """websockify's token-plugin contract: token -> (host, port), or None."""

    def lookup(self, token: str) -> tuple[str, int] | None:
        # Never reached: TicketProxyRequestHandler.get_target admits tickets itself, with the
        # Origin; without one, nothing is admitted here.
        return None


class TicketProxyRequestHandler(ProxyRequestHandler):
    """websockify's handler, admitting tickets itself so refusals say why and sessions are recorded."""

    # Set by get_target, which websockify calls first; the relay runs only for an admitted ticket.
    ticket: ConsoleTicket
    refusal: Refusal | None = None
    session_id: int  # set when the relay starts, before websockify's first heartbeat
    bytes_to_client = 0
    bytes_from_client = 0

    def get_target(self, target_plugin):
        # websockify forks a process per connection: never share the parent's DB connection.
        connections.close_all()
        token = parse_qs(urlsplit(self.path).query).get("token", [""])[0]
        origin = origin_normalize(self.headers.get("Origin")) or ""
        try:
            self.ticket = console_ticket_admit(token=token, kind=ConsoleTicket.Kind.WEBSOCKIFY, origin=origin)
        except TicketRefused as refused:
            REFUSALS.labels(refused.refusal.name.lower()).inc()
            # Refused after the handshake, with the refusal's close code, so the page can say
            # why (as the portal's own proxy does). The token stays out of the log message.
            self.log_message("console ticket refused: %s", refused.refusal.message)
            self.refusal = refused.refusal
            return None, None
        return self.ticket.address, self.ticket.port

    def new_websocket_client(self):
        if self.refusal is not None:
            raise self.CClose(self.refusal.value, self.refusal.message)
        slots = self.server.connection_slots
        if not slots.acquire(block=False):
            raise self.CClose(CLOSE_TRY_AGAIN_LATER, "the console proxy is at its connection limit")
        try:
            self._relay_recorded()
        finally:
            slots.release()

    def send_ping(self, data=b""):
        """websockify's heartbeat: also the check that the user may still use this console."""
        refusal = recheck_one(self.session_id, self.ticket.pk, (self.bytes_to_client, self.bytes_from_client))
        connections.close_all()
        if refusal is not None:
            raise self.CClose(refusal.value, refusal.message)
        super().send_ping(data)

    def _relay_recorded(self):
        session = console_session_start(
            ticket=self.ticket, via=ConsoleSession.Via.WEBSOCKIFY, client_address=self.client_address[0]
        )
        self.session_id = session.pk
        # Each session is a process of its own: holding a database connection for its whole
        # life would run a database server out of connections with a few hundred sessions.
        connections.close_all()
        reason = "closed"
        try:
            if self.ticket.ssh is None:
                super().new_websocket_client()
            else:
                self._relay_through_ssh(self.ticket.ssh)
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

    def _relay_through_ssh(self, target) -> None:
        """The console of a remote host, through `ssh -W` (OpenSSH's stdio forwarding) to the
        port on the host's loopback: this process is one connection's, so one ssh is too."""
        ours, theirs = socket.socketpair()
        ssh = subprocess.Popen(
            [
                "ssh",
                *ssh_options(target),
                "-W",
                f"{self.ticket.address}:{self.ticket.port}",
                f"{target.user}@{target.hostname}",
            ],
            stdin=theirs.fileno(),
            stdout=theirs.fileno(),
            stderr=subprocess.DEVNULL,
        )
        theirs.close()
        try:
            self.do_proxy(ours)
        finally:
            ours.close()
            ssh.terminate()
            ssh.wait(5)

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
    proxy = WebSocketProxy(
        RequestHandlerClass=TicketProxyRequestHandler,
        listen_host=host,
        listen_port=port,
        token_plugin=TicketTokens(),
        web=None,  # never serve files
        heartbeat=settings.CONSOLE_RECHECK_SECONDS,
        verbose=verbose,
    )
    # Shared with the per-connection processes websockify forks.
    proxy.connection_slots = multiprocessing.BoundedSemaphore(settings.PROXY_MAX_CONNECTIONS)
    return proxy

"""Daphne, as `make run` starts it: `python -m portal.daphne [daphne's options] portal.asgi:application`.

Stock Daphne with two additions an ASGI application cannot make itself:

- **Backpressure on WebSockets.** Daphne's `send()` returns at once and Twisted buffers what
  the application sends without bound: a browser that stops reading its console let one
  session grow the server by 111 MiB in 15 s. Here each WebSocket's transport gets a Twisted
  streaming producer, which Twisted pauses when its write buffer passes `bufferSize` (64 KiB)
  and resumes once it has drained; `send()` of a WebSocket message waits while it is paused.
  The relay awaits `send()` before reading the console again, so one session holds at most
  one read (128 KiB) plus Twisted's buffer, and the console's output waits in the kernel.
- **Access log lines without tickets.** HTTP requests are logged with their query string;
  `token=` values are redacted and the line is kept.
- **A graceful SIGTERM.** Stock Daphne drops every connection at once on SIGTERM, so open
  consoles end without a word and without their session records. Here SIGTERM first cancels
  the application instances (the console proxy then closes its WebSockets with 1012, "service
  restart", which the page answers by reconnecting, and records the session's end), waits for
  them, then stops the reactor.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
import sys

from daphne.cli import CommandLineInterface
from daphne.server import Server
from twisted.internet import reactor

from portal.logsafety import redact_tokens


class _Drain:
    """A Twisted streaming producer that only tells whether the transport wants more data."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's interface
        self.writable.clear()

    def resumeProducing(self) -> None:  # noqa: N802
        self.writable.set()

    def stopProducing(self) -> None:  # noqa: N802 - connection lost: never keep a sender waiting
        self.writable.set()


def _drain_for(protocol) -> _Drain | None:
    drain = getattr(protocol, "_portal_drain", None)
    if drain is None:
        transport = getattr(protocol, "transport", None)
        if transport is None:
            return None
        drain = _Drain()
        if getattr(transport, "producer", None) is not None:
            # The HTTP channel that did the upgrade registered itself; it has no say any more.
            transport.unregisterProducer()
        transport.registerProducer(drain, True)
        protocol._portal_drain = drain
    return drain


logger = logging.getLogger(__name__)

SERVICE_RESTART = 1012


class _Done:
    def done(self) -> bool:
        return True


_DONE = _Done()


class BackpressureServer(Server):
    def __init__(self, *args, action_logger=None, **kwargs) -> None:
        if action_logger is not None:
            action_logger = _redacting(action_logger)
        super().__init__(*args, action_logger=action_logger, **kwargs)

    def run(self) -> None:
        if self.signal_handlers:
            # After Twisted has installed its own handlers, which would stop at once.
            reactor.callWhenRunning(self._install_graceful_stop)
        super().run()

    def _install_graceful_stop(self) -> None:
        def on_signal(signum, _frame) -> None:
            reactor.callFromThread(self._stop_gracefully, signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def _stop_gracefully(self, name: str) -> None:
        logger.info("%s: closing open connections, then stopping", name)
        try:
            stopping = self.kill_all_applications()
        except Exception:  # noqa: BLE001 - never let a failed clean-up keep the server running
            logger.exception("could not close connections gracefully")
            self.stop()
            return
        # Let the close frames leave. (Twisted types its global reactor as the interface.)
        stopping.addBoth(lambda _: reactor.callLater(0.2, self.stop))  # type: ignore[arg-type]

    def kill_all_applications(self):
        # Daphne's own version fails on a connection whose application already finished
        # (no "application_instance" left); only the running ones need cancelling.
        for details in self.connections.values():
            details.setdefault("application_instance", _DONE)
        return super().kill_all_applications()

    async def handle_reply(self, protocol, message):
        if message["type"] == "websocket.close" and message.get("code") == SERVICE_RESTART:
            # autobahn's sendClose() refuses every code but 1000 and 3000-4999; 1012 ("service
            # restart") is the one browsers and the console page know for a worker stopping.
            if protocol in self.connections and protocol.state == protocol.STATE_OPEN:
                protocol.sendCloseFrame(code=SERVICE_RESTART, isReply=False)
            return
        await super().handle_reply(protocol, message)
        if message["type"] == "websocket.send":
            drain = _drain_for(protocol)
            if drain is not None and not drain.writable.is_set():
                await drain.writable.wait()


def _redacting(action_logger):
    def log(protocol, action, details):
        if "path" in details:
            details = {**details, "path": redact_tokens(str(details["path"]))}
        action_logger(protocol, action, details)

    return log


class PortalCommandLineInterface(CommandLineInterface):
    server_class = BackpressureServer


if __name__ == "__main__":
    faulthandler.enable()  # a crash in a C library (libvirt's client) says where, in the log
    PortalCommandLineInterface().run(sys.argv[1:])

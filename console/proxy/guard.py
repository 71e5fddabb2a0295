"""Keeps checking, for as long as consoles stay open, that their users still have the right.

One guard per process and event loop: every `CONSOLE_RECHECK_SECONDS` it checks the tickets of
all the consoles this process relays in one batch (a few queries, in a thread), records a
heartbeat for them, and ends those whose right is gone — logged out, new password, account
deactivated, VM given to someone else, ticket or API token revoked, ended by an
administrator — through the callback each console registered.

The database is the truth and the periodic round the fallback; a notice on the channel layer
makes the process relaying a session check it at once (`console.notices`: an
administrator's End, a share or an API token ended, a logout). With Redis that reaches every
worker and proxy process; with the in-memory layer, the process that sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections

from console.control import console_inputs
from console.errors import End
from console.notices import RECHECK, session_group
from console.recordings import recordings_sweep
from console.sessions import (
    console_sessions_end_requested,
    console_sessions_heartbeat,
    console_sessions_sweep,
)
from console.tickets import console_input_record, console_rights_check

logger = logging.getLogger(__name__)

OnRefused = Callable[[End], Awaitable[None]]


class _Watched:
    __slots__ = (
        "counters",
        "established",
        "had_input",
        "on_input",
        "on_refused",
        "recorded_established",
        "ticket_id",
    )

    def __init__(
        self,
        ticket_id: int,
        on_refused: OnRefused,
        counters: Callable[[], tuple[int, int]] | None,
        established: Callable[[], bool] | None,
        on_input: Callable[[bool], None] | None,
    ) -> None:
        self.ticket_id, self.on_refused, self.counters = ticket_id, on_refused, counters
        self.established, self.on_input = established, on_input
        self.had_input = False
        self.recorded_established = False


SWEEP_EVERY = 5  # rounds: sessions of a lost worker are ended within about half a minute


def _check(
    session_tickets: dict[int, int],
    *,
    sweep: bool = False,
    counters: dict[int, tuple[int, int]] | None = None,
    input_tickets: set[int] | None = None,
    established: set[int] | None = None,
) -> tuple[dict[int, End | None], dict[int, bool]]:
    """For each session: why it must end now, or None; and for each VNC ticket, whether its
    keys and mouse reach the VM now (console.control)."""
    close_old_connections()
    console_sessions_heartbeat(session_tickets, counters, established or ())
    if input_tickets:
        console_input_record(input_tickets)
    if sweep:
        console_sessions_sweep()
        recordings_sweep()
    by_ticket = console_rights_check(session_tickets.values())
    ended = console_sessions_end_requested(session_tickets)
    refusals = {
        sid: End.ENDED_BY_ADMIN if sid in ended else by_ticket.get(tid)
        for sid, tid in session_tickets.items()
    }
    return refusals, console_inputs(session_tickets.values())


class SessionGuard:
    """The consoles of one event loop, checked together."""

    def __init__(self) -> None:
        self._watched: dict[int, _Watched] = {}
        self._task: asyncio.Task | None = None
        self._rounds = 0
        self._checking = asyncio.Lock()
        self._layer = get_channel_layer()
        self._channel: str | None = None
        self._listener: asyncio.Task | None = None

    def watch(
        self,
        session_id: int,
        ticket_id: int,
        on_refused: OnRefused,
        counters: Callable[[], tuple[int, int]] | None = None,
        *,
        established: Callable[[], bool] | None = None,
        on_input: Callable[[bool], None] | None = None,
    ) -> None:
        """Check this console's right every round; `counters` gives its bytes to and from the
        client so far, recorded with each heartbeat, `established` whether its handshake
        completed (recorded with the first heartbeat after it did), and `on_input` hears
        whether its keys and mouse may reach the VM (a VNC console's control)."""
        self._watched[session_id] = _Watched(ticket_id, on_refused, counters, established, on_input)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        if self._layer is not None:
            loop.create_task(self._listen_to(session_id))

    def forget(self, session_id: int) -> None:
        if self._watched.pop(session_id, None) is not None and self._layer is not None and self._channel:
            asyncio.get_running_loop().create_task(
                self._layer.group_discard(session_group(session_id), self._channel)
            )
        if not self._watched and self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()  # nothing left to check: no task lingers
            self._task = None
        if not self._watched and self._listener is not None:
            self._listener.cancel()
            self._listener = self._channel = None

    def input_seen(self, session_id: int) -> None:
        """The user pressed a key or moved the mouse on this console (recorded at the next round)."""
        entry = self._watched.get(session_id)
        if entry is not None:
            entry.had_input = True

    async def check_now(self) -> None:
        """One round: heartbeat, and end every console whose right is gone."""
        async with self._checking:
            await self._check()

    async def _check(self) -> None:
        watched = dict(self._watched)
        if not watched:
            return
        self._rounds += 1
        input_tickets = {w.ticket_id for w in watched.values() if w.had_input}
        established = {
            sid
            for sid, w in watched.items()
            if not w.recorded_established and w.established is not None and w.established()
        }
        for sid, entry in watched.items():
            entry.had_input = False
            entry.recorded_established |= sid in established
        refusals, inputs = await database_sync_to_async(_check)(
            {sid: w.ticket_id for sid, w in watched.items()},
            sweep=self._rounds % SWEEP_EVERY == 0,
            counters={sid: w.counters() for sid, w in watched.items() if w.counters is not None},
            input_tickets=input_tickets,
            established=established,
        )
        for session_id, entry in watched.items():
            refusal = refusals.get(session_id)
            if refusal is not None and session_id in self._watched:
                self.forget(session_id)
                logger.info("ending console session %s: %s", session_id, refusal.message)
                await entry.on_refused(refusal)
            elif entry.on_input is not None and entry.ticket_id in inputs:
                entry.on_input(inputs[entry.ticket_id])

    async def _listen_to(self, session_id: int) -> None:
        """Join the session's notice group; one listener per guard hears them all."""
        layer = self._layer
        assert layer is not None  # noqa: S101 - only called with a layer
        try:
            if self._channel is None:
                self._channel = await layer.new_channel()
                self._listener = asyncio.get_running_loop().create_task(self._listen(self._channel))
            await layer.group_add(session_group(session_id), self._channel)
        except Exception:  # noqa: BLE001 - Redis away: the periodic round still checks
            logger.warning(
                "console notices unavailable; checking every %s s", settings.CONSOLE_RECHECK_SECONDS
            )

    async def _listen(self, channel: str) -> None:
        layer = self._layer
        assert layer is not None  # noqa: S101
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Redis away: wait, then listen again
                await asyncio.sleep(settings.CONSOLE_RECHECK_SECONDS)
                continue
            if message.get("type") == RECHECK and self._watched:
                with contextlib.suppress(Exception):
                    await self.check_now()

    async def _run(self) -> None:
        while self._watched:
            await asyncio.sleep(settings.CONSOLE_RECHECK_SECONDS)
            try:
                await self.check_now()
            except Exception:  # noqa: BLE001 - a failed round (database away) must not stop the guard
                logger.exception("console right check failed; trying again")


_guards: dict[asyncio.AbstractEventLoop, SessionGuard] = {}


def session_guard() -> SessionGuard:
    """The guard of the running event loop."""
    loop = asyncio.get_running_loop()
    guard = _guards.get(loop)
    if guard is None:
        for old in [old for old in _guards if old.is_closed()]:
            del _guards[old]
        guard = _guards[loop] = SessionGuard()
    return guard

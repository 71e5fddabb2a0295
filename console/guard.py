"""Keeps checking, for as long as consoles stay open, that their users still have the right.

One guard per process and event loop: every `CONSOLE_RECHECK_SECONDS` it checks the tickets of
all the consoles this process relays in one batch (a few queries, in a thread), records a
heartbeat for them, and ends those whose right is gone — logged out, new password, account
deactivated, VM given to someone else, ticket revoked — through the callback each console
registered. The synchronous form (`recheck_one`) serves websockify's forked children.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import close_old_connections

from console.sessions import (
    console_sessions_end_requested,
    console_sessions_heartbeat,
    console_sessions_sweep,
)
from console.tickets import Refusal, console_input_record, console_rights_check

logger = logging.getLogger(__name__)

OnRefused = Callable[[Refusal], Awaitable[None]]


@dataclass
class _Watched:
    ticket_id: int
    on_refused: OnRefused
    counters: Callable[[], tuple[int, int]] | None = None
    had_input: bool = False


SWEEP_EVERY = 5  # rounds: sessions of a lost worker are ended within about half a minute


def _check(
    session_tickets: dict[int, int],
    *,
    sweep: bool = False,
    counters: dict[int, tuple[int, int]] | None = None,
    input_tickets: set[int] | None = None,
) -> dict[int, Refusal | None]:
    """For each session: why it must end now, or None."""
    close_old_connections()
    console_sessions_heartbeat(session_tickets, counters)
    if input_tickets:
        console_input_record(input_tickets)
    if sweep:
        console_sessions_sweep()
    by_ticket = console_rights_check(session_tickets.values())
    ended = console_sessions_end_requested(session_tickets)
    return {
        sid: Refusal.ENDED_BY_ADMIN if sid in ended else by_ticket.get(tid)
        for sid, tid in session_tickets.items()
    }


class SessionGuard:
    """The consoles of one event loop, checked together."""

    def __init__(self) -> None:
        self._watched: dict[int, _Watched] = {}
        self._task: asyncio.Task | None = None
        self._rounds = 0

    def watch(
        self,
        session_id: int,
        ticket_id: int,
        on_refused: OnRefused,
        counters: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        """Check this console's right every round; `counters` gives its bytes to and from the
        client so far, recorded with each heartbeat."""
        self._watched[session_id] = _Watched(ticket_id, on_refused, counters)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def forget(self, session_id: int) -> None:
        self._watched.pop(session_id, None)
        if not self._watched and self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()  # nothing left to check: no task lingers
            self._task = None

    def input_seen(self, session_id: int) -> None:
        """The user pressed a key or moved the mouse on this console (recorded at the next round)."""
        entry = self._watched.get(session_id)
        if entry is not None:
            entry.had_input = True

    async def check_now(self) -> None:
        """One round: heartbeat, and end every console whose right is gone."""
        watched = dict(self._watched)
        if not watched:
            return
        self._rounds += 1
        input_tickets = {w.ticket_id for w in watched.values() if w.had_input}
        for entry in watched.values():
            entry.had_input = False
        refusals = await database_sync_to_async(_check)(
            {sid: w.ticket_id for sid, w in watched.items()},
            sweep=self._rounds % SWEEP_EVERY == 0,
            counters={sid: w.counters() for sid, w in watched.items() if w.counters is not None},
            input_tickets=input_tickets,
        )
        for session_id, entry in watched.items():
            refusal = refusals.get(session_id)
            if refusal is not None and session_id in self._watched:
                self.forget(session_id)
                logger.info("ending console session %s: %s", session_id, refusal.message)
                await entry.on_refused(refusal)

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


def recheck_one(session_id: int, ticket_id: int, counters: tuple[int, int] | None = None) -> Refusal | None:
    """The same check for one session, synchronously (websockify's children)."""
    return _check({session_id: ticket_id}, counters={session_id: counters} if counters else None).get(
        session_id
    )

"""Notices to the processes relaying consoles: "check these sessions now".

The database is the truth: an administrator's End, a share or an API token ended, a logout
are recorded there, and every relaying process checks its consoles against it every
CONSOLE_RECHECK_SECONDS. A notice on the channel layer makes the process relaying a session
check it at once instead (console/proxy/guard.py listens). With Redis it reaches every
worker and standalone proxy; with the in-memory layer, only the process that sends it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

RECHECK = "console.recheck"


def session_group(session_id: int) -> str:
    return f"console-session-{session_id}"


def console_sessions_notify(session_ids: Iterable[int]) -> None:
    """Tell the processes relaying these sessions to check them now (from synchronous code)."""
    layer = get_channel_layer()
    ids = list(session_ids)
    if layer is None or not ids:
        return

    async def send() -> None:
        for session_id in ids:
            await layer.group_send(session_group(session_id), {"type": RECHECK})

    try:
        async_to_sync(send)()
    except Exception:  # noqa: BLE001 - the periodic round still ends them
        logger.warning(
            "could not notify the consoles' processes; they end at their next check", exc_info=True
        )

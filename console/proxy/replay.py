"""SPICE recordings played back in spice-html5: /ws/recording/<id>/spice/ acts as the SPICE server.

spice-html5 opens a connection per channel, as it does to a live console, and links each. The
replay answers each link from the recordings of the same console (the channels one page opened
with one ticket): the recorded stream of that channel is what the client received, the proxy's
link reply and result included, so it is sent again as it was, with its timing (`?speed=` 1 to
16, or 0: at once, to see where a session ended), then a text frame that says it ended (the
page reads it once spice-html5 has drawn what came before). What the client sends (its ticket, acks,
pongs) goes nowhere; a channel nobody recorded is answered "not available". The page's user is
checked as for the recording's page, at every link and every 30 s while it plays; the main
channel's link is audited as a playback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from console.errors import End, Refused
from console.models import ConsoleProtocol, ConsoleRecording
from console.origins import websocket_origin_allowed
from console.proxy.spice import (
    HEADER,
    LINK_REPLY_FIXED,
    MAGIC,
    MAIN,
    VERSION_MAJOR,
    VERSION_MINOR,
    SpiceLinkReader,
)
from console.proxy.websocket import WebSocketClient, user_from_session_cookie
from console.proxy.wire import Violation
from console.recordings import (
    INPUT,
    TO_CLIENT,
    recording_file,
    recording_may_play,
    recording_played,
    stream_header,
    stream_records_from,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

LINK_ERR_CHANNEL_NOT_AVAILABLE = 9  # spice-protocol's SpiceLinkErr
SPEEDS = (0, 1, 2, 4, 8, 16)
RECHECK_SECONDS = 30.0
LINK_SECONDS = 30.0  # a client must have sent its link by then
END_OF_RECORDING = '{"end": "the end of the recording"}'


@dataclass(frozen=True)
class ReplayChannels:
    """The recorded channels of one SPICE console: channel type -> recording file."""

    recording_id: int
    files: dict[int, Path]


def _channel_type(path: Path) -> int | None:
    """Which channel a SPICE recording holds: its first event says (the index says so only once
    the recording ended; a killed worker's did not)."""
    try:
        with path.open("rb") as handle:
            stream_header(handle)
            for _ms, kind, data in stream_records_from(handle):
                if kind == INPUT:
                    event = json.loads(data)
                    if "spice_channel" in event:
                        return int(event["type"])
                return None
    except (OSError, ValueError, KeyError):
        return None
    return None


def replay_admit(*, scope: Scope, recording_id: int) -> ReplayChannels:
    """Who asks, whether they may play this recording, and its console's recorded channels
    (blocking: the database)."""
    if websocket_origin_allowed(scope) is None:
        raise Refused(End.FOREIGN_ORIGIN)
    user = user_from_session_cookie(scope.get("headers", []))
    if not user.is_authenticated:
        raise Refused(End.NOT_LOGGED_IN)
    recording = ConsoleRecording.objects.select_related("session").filter(pk=recording_id).first()
    if recording is None or not recording_may_play(user=user, recording=recording):
        raise Refused(End.FORBIDDEN, "no such recording")
    if recording.protocol != ConsoleProtocol.SPICE:
        raise Refused(End.WRONG_PATH, "not a SPICE recording")
    ticket_id = recording.session.ticket_id
    siblings = (
        ConsoleRecording.objects.filter(session__ticket_id=ticket_id, protocol=ConsoleProtocol.SPICE)
        if ticket_id is not None
        else ConsoleRecording.objects.filter(pk=recording.pk)
    ).order_by("id")
    files: dict[int, Path] = {}
    for sibling in siblings:
        try:
            path = recording_file(sibling)
        except ValueError:
            continue
        channel = _channel_type(path)
        if channel is not None and channel not in files:  # a page that reconnected: its first
            files[channel] = path
    return ReplayChannels(recording.pk, files)


def _link_refusal(error: int) -> bytes:
    body = struct.pack("<I", error) + bytes(LINK_REPLY_FIXED - 4)
    return HEADER.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, len(body)) + body


def _speed(scope: Scope) -> int:
    value = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("speed", ["1"])[0]
    return int(value) if value.isdigit() and int(value) in SPEEDS else 1


async def _replay(client: WebSocketClient, path: Path, speed: int, recheck: object) -> None:
    """Send the channel's recorded stream with its timing, rechecking the user as it goes."""
    started = last_check = time.monotonic()
    with path.open("rb") as handle:
        stream_header(handle)
        for ms, kind, data in stream_records_from(handle):
            if kind != TO_CLIENT:
                continue
            if speed:
                delay = started + ms / 1000 / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            if time.monotonic() - last_check > RECHECK_SECONDS:
                await recheck()  # type: ignore[operator]
                last_check = time.monotonic()
            await client.send(data)
    # The end: a text frame after the last message, which the page reads once spice-html5 has
    # drawn everything before it (a close would race the browser's reading: the socket stays
    # open, the screen as it was, until the page leaves).
    await client.send_text(END_OF_RECORDING)
    while True:
        await asyncio.sleep(RECHECK_SECONDS)
        await recheck()  # type: ignore[operator]


async def _read_link(client: WebSocketClient) -> int:
    reader = SpiceLinkReader()
    while reader.link is None:
        data = await client.receive()
        if data is None:
            raise ConnectionResetError
        reader.feed(data)
    return reader.link.channel_type


async def _drain(client: WebSocketClient) -> None:
    """What the client sends after its link (ticket, acks, pongs) goes nowhere."""
    while await client.receive() is not None:
        pass


def recording_replay_websocket() -> ASGIApp:
    """The ASGI application of /ws/recording/<id>/spice/."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        offered = scope.get("subprotocols") or ()
        await send({"type": "websocket.accept", "subprotocol": "binary" if "binary" in offered else None})
        client = WebSocketClient(scope, receive, send, reason_frames=False)
        recording_id = scope["url_route"]["kwargs"]["recording_id"]
        admit = database_sync_to_async(replay_admit)

        async def recheck() -> ReplayChannels:
            return await admit(scope=scope, recording_id=recording_id)

        try:
            channels = await recheck()
            channel = await asyncio.wait_for(_read_link(client), LINK_SECONDS)
            path = channels.files.get(channel)
            if path is None:
                await client.send(_link_refusal(LINK_ERR_CHANNEL_NOT_AVAILABLE))
                await client.end(End.CONSOLE_ENDED, "that channel was not recorded")
                return
            if channel == MAIN:
                user = await database_sync_to_async(user_from_session_cookie)(scope.get("headers", []))
                recording = await database_sync_to_async(ConsoleRecording.objects.get)(pk=recording_id)
                await database_sync_to_async(recording_played)(
                    recording=recording,
                    user=user,  # type: ignore[arg-type]
                    via="page",
                )
            drain = asyncio.ensure_future(_drain(client))
            play = asyncio.ensure_future(_replay(client, path, _speed(scope), recheck))
            done, _pending = await asyncio.wait({drain, play}, return_when=asyncio.FIRST_COMPLETED)
            for task in (drain, play):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            failure = play.exception() if play in done and not play.cancelled() else None
            if isinstance(failure, Refused):
                raise failure
        except Refused as refused:
            await client.end(refused.end, refused.detail)
        except Violation as violation:
            await client.end(End.PROTOCOL_VIOLATION, str(violation))
        except (TimeoutError, ConnectionResetError, OSError):
            await client.end(End.CONSOLE_ENDED, "the replay ended")

    return app

"""Console recordings: one more stage of the console pipeline, on every path.

What a console's client received, with its timing, is what a recording keeps: for VNC the
whole server stream the client saw (the proxy's own handshake answers included), so noVNC's
decoder can play it back as it was drawn; for each SPICE channel the same, per channel; for the
serial console an asciicast v2 file (asciinema's format). What the client sent that acts on the
VM is kept as events — that a key was pressed, and which one only when `console.recordKeystrokes`
is on (pages and the API's ticket say so).

Files live under RECORDINGS_DIR, one per session, written append-only as the session goes (a
worker killed mid-session leaves everything up to its last write (records are buffered for at
most 0.1 s or 256 KiB), readable: the stream format is
length-prefixed, asciicast a line per event) and fsynced at its end; `ConsoleRecording` indexes
them. A full disk or `console.recordingMaxMiB` ends the recording, never the console, with a
note in its record. `recordings_sweep` deletes what `console.recordingRetentionDays` no longer
keeps.

Stream format: b"VCPREC1\\n", a JSON header line, then records of a big-endian u32 (ms since
the start), a u8 kind (0: to the client, 1: an input event, JSON), a u32 length, the bytes.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import json
import logging
import os
import secrets
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from console.access import vms_administered_by
from console.globalconfig import (
    RECORD_KEYSTROKES,
    RECORDING,
    RECORDING_MAX_MIB,
    RECORDING_PLAYBACK,
    RECORDING_RETENTION,
    config_int,
    config_value,
)
from console.models import ConsoleProtocol, ConsoleRecording, RecordingPlayback

if TYPE_CHECKING:
    from collections.abc import Iterator

    from console.auth import User
    from console.models import ConsoleSession, ConsoleTicket, VirtualMachine

logger = logging.getLogger(__name__)

MAGIC = b"VCPREC1\n"
FLUSH_BYTES = 256 * 1024  # a recording's buffer: written when this full...
FLUSH_SECONDS = 0.1  # ...or this long after its first record
RECORD = struct.Struct(">IBI")
TO_CLIENT, INPUT = 0, 1


@dataclass(frozen=True)
class RecordingPolicy:
    record: bool
    keystrokes: bool
    max_bytes: int


def recording_policy(vm: VirtualMachine) -> RecordingPolicy:
    """Whether consoles of `vm` are recorded now (console.recording, the VM's own switch)."""
    mode = config_value(RECORDING)
    record = mode == "all" or (mode == "per-vm" and vm.record_console)
    return RecordingPolicy(
        record=record,
        keystrokes=record and config_value(RECORD_KEYSTROKES) == "true",
        max_bytes=config_int(RECORDING_MAX_MIB) << 20,
    )


@dataclass(frozen=True)
class RecordingOpen:
    """A recording started for a session: where the recorder writes, and how."""

    recording_id: int
    path: Path
    format: str
    keystrokes: bool
    max_bytes: int
    header: dict


def recording_start(
    *, session: ConsoleSession, ticket: ConsoleTicket, policy: RecordingPolicy, channel: str = ""
) -> RecordingOpen:
    """Index a new recording for the session (the recorder creates its file)."""
    fmt = (
        ConsoleRecording.Format.ASCIICAST
        if ticket.protocol == ConsoleProtocol.SERIAL
        else ConsoleRecording.Format.STREAM
    )
    day = timezone.now().strftime("%Y/%m/%d")
    suffix = "cast" if fmt == ConsoleRecording.Format.ASCIICAST else "rec"
    # Named by session; the random part keeps a database restored (or reset) from an older
    # backup from ever reusing a file another session wrote.
    relative = f"{day}/session-{session.pk}-{secrets.token_hex(4)}.{suffix}"
    recording = ConsoleRecording.objects.create(
        session=session,
        vm_id=ticket.vm_id,
        user_id=ticket.user_id,
        protocol=ticket.protocol,
        channel=channel,
        format=fmt,
        path=relative,
        keystrokes=policy.keystrokes,
    )
    header = {
        "session": session.pk,
        "vm": ticket.vm.name,
        "user": ticket.user.get_username(),
        "protocol": ticket.protocol,
        "started": session.started_at.isoformat(),
        "keystrokes": policy.keystrokes,
    }
    return RecordingOpen(
        recording.pk,
        Path(settings.RECORDINGS_DIR) / relative,
        fmt,
        policy.keystrokes,
        policy.max_bytes,
        header,
    )


def recording_end(*, recording_id: int, size: int, note: str, channel: str = "") -> None:
    ConsoleRecording.objects.filter(pk=recording_id).update(
        ended_at=timezone.now(), bytes=size, note=note[:255], channel=channel
    )


class Recorder:
    """Writes one session's recording as it goes (on the event loop: small appends to the page
    cache); stops by itself, with a note, on a full disk or at the size cap."""

    def __init__(self, opened: RecordingOpen) -> None:
        self.opened = opened
        self.size = 0
        self.note = ""
        self.channel = ""  # a SPICE channel's name, once its link was read
        self.started = time.monotonic()
        self.keystrokes = opened.keystrokes
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._pending = bytearray()
        self._flush_timer: asyncio.TimerHandle | None = None
        opened.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd: int | None = os.open(opened.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600)
        if opened.format == ConsoleRecording.Format.ASCIICAST:
            header = {
                "version": 2,
                "width": 80,
                "height": 24,
                "timestamp": int(time.time()),
                "title": opened.header["vm"],
            }
            self._write(
                json.dumps({**header, "env": {"TERM": "xterm-256color"}, "portal": opened.header}).encode()
                + b"\n"
            )
        else:
            self._write(MAGIC + json.dumps(opened.header).encode() + b"\n")

    @property
    def recording(self) -> bool:
        return self._fd is not None

    def _ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def _write(self, *parts: bytes) -> None:
        """Append a record: buffered (a write per FLUSH_BYTES or FLUSH_SECONDS, not one per
        message: measured, a write per 64-byte echo cost its round trip 17 %); a part of
        FLUSH_BYTES or more goes straight to the file, uncopied."""
        if self._fd is None:
            return
        length = sum(len(part) for part in parts)
        if self.size + length > self.opened.max_bytes:
            self._stop(
                f"stopped at the size cap (console.recordingMaxMiB, {self.opened.max_bytes >> 20} MiB)"
            )
            return
        self.size += length
        if length >= FLUSH_BYTES:
            self.flush()
            self._write_out(parts)
            return
        for part in parts:
            self._pending += part
        if len(self._pending) >= FLUSH_BYTES:
            self.flush()
        elif self._flush_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # not on an event loop (a script, a test): at once
                self.flush()
                return
            self._flush_timer = loop.call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Write what is buffered (the event loop calls it FLUSH_SECONDS after a first record)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._pending:
            pending, self._pending = self._pending, bytearray()
            self._write_out((pending,))

    def _write_out(self, parts: tuple[bytes | bytearray, ...]) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            os.writev(fd, parts)
        except OSError as exc:
            self._stop(f"stopped: {exc.strerror or exc} (the console went on)")

    def to_client(self, data: bytes) -> None:
        """What the client received."""
        if self._fd is None:
            return
        if self.opened.format == ConsoleRecording.Format.ASCIICAST:
            text = self._decoder.decode(data)
            if text:
                self._write(json.dumps([round(self._ms() / 1000, 3), "o", text]).encode() + b"\n")
        else:
            self._write(RECORD.pack(self._ms(), TO_CLIENT, len(data)), data)

    def input(self, event: dict) -> None:
        """Something the client did that acts on the VM (a key: which one only with keystrokes)."""
        if self._fd is None:
            return
        if self.opened.format == ConsoleRecording.Format.ASCIICAST:
            if "text" in event:
                self._write(json.dumps([round(self._ms() / 1000, 3), "i", event["text"]]).encode() + b"\n")
            return
        payload = json.dumps(event).encode()
        self._write(RECORD.pack(self._ms(), INPUT, len(payload)), payload)

    def _stop(self, note: str) -> None:
        self.note = note
        logger.warning("recording %s %s", self.opened.recording_id, note)
        self.close()

    def close(self) -> None:
        self.flush()
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.fsync(fd)
            except OSError:
                pass
            os.close(fd)


# -- who may play what, and the sweep -------------------------------------------------------------


def recordings_playable_by(user: User) -> QuerySet[ConsoleRecording]:
    """The recordings `user` may play, by console.recordingPlayback: every one for staff; their
    own sessions' and those of VMs they administer (console.access) when the policy says so."""
    rows = ConsoleRecording.objects.all()
    if not user.is_authenticated or not user.is_active:
        return rows.none()
    if user.is_staff:
        return rows
    policy = config_value(RECORDING_PLAYBACK)
    allowed = Q(pk__in=[])
    if policy in ("staff-and-user", "staff-vm-admins-and-user"):
        allowed |= Q(user=user)
    if policy in ("staff-and-vm-admins", "staff-vm-admins-and-user"):
        allowed |= Q(vm__in=vms_administered_by(user))
    return rows.filter(allowed)


def recording_may_play(*, user: User, recording: ConsoleRecording) -> bool:
    """Whether `user` may play `recording` now (asked again while a playback streams)."""
    return recordings_playable_by(user).filter(pk=recording.pk).exists()


def recording_played(*, recording: ConsoleRecording, user: User, via: str) -> None:
    """Every playback or download is itself recorded."""
    RecordingPlayback.objects.create(recording=recording, user=user, via=via)


def recording_file(recording: ConsoleRecording) -> Path:
    """The recording's file, which must lie under RECORDINGS_DIR (the index names it)."""
    base = Path(settings.RECORDINGS_DIR).resolve()
    path = (base / recording.path).resolve()
    if base not in path.parents:
        raise ValueError("a recording outside RECORDINGS_DIR")
    return path


def recordings_sweep(*, now: datetime | None = None) -> int:
    """Delete recordings older than console.recordingRetentionDays: files and index. How many."""
    cutoff = (now or timezone.now()) - timedelta(days=config_int(RECORDING_RETENTION))
    old = list(ConsoleRecording.objects.filter(started_at__lt=cutoff))
    for recording in old:
        try:
            recording_file(recording).unlink(missing_ok=True)
        except (OSError, ValueError) as exc:
            logger.warning("could not delete recording %s: %s", recording.pk, exc)
    ConsoleRecording.objects.filter(pk__in=[r.pk for r in old]).delete()
    return len(old)


def stream_records(data: bytes) -> tuple[dict, list[tuple[int, int, bytes]]]:
    """A stream recording's header and its complete records (a last one cut short by a killed
    worker is left out): what tests and scripts read it with."""
    handle = io.BytesIO(data)
    header = stream_header(handle)
    return header, list(stream_records_from(handle))


def stream_header(handle: BinaryIO) -> dict:
    """Read a stream recording's magic and header line from an open file."""
    if handle.read(len(MAGIC)) != MAGIC:
        raise ValueError("not a console recording")
    line = handle.readline(64 * 1024)
    if not line.endswith(b"\n"):
        raise ValueError("a console recording without its header")
    return json.loads(line)


def stream_records_from(handle: BinaryIO) -> Iterator[tuple[int, int, bytes]]:
    """The records that follow the header, read one at a time (ms, kind, bytes); a last one cut
    short by a killed worker is left out."""
    while len(head := handle.read(RECORD.size)) == RECORD.size:
        ms, kind, length = RECORD.unpack(head)
        data = handle.read(length)
        if len(data) < length:
            return
        yield ms, kind, data

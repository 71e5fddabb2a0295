"""Console recordings: the recorder's files (a killed worker's included), the policy, retention,
who may play what back, and a recorded session through the gate."""

import json
import os
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from console.models import ConsoleRecording, ConsoleSession, RecordingPlayback
from console.recordings import (
    MAGIC,
    Recorder,
    RecordingOpen,
    recording_file,
    recording_may_play,
    recording_policy,
    recordings_sweep,
    stream_records,
)
from tests.helpers import EchoServer, communicator, make_ticket, receive_exactly, rfb_handshake
from tests.proxy.test_rfb import KEY, POINTER, cut

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def recordings_dir(tmp_path, settings):
    settings.RECORDINGS_DIR = str(tmp_path / "recordings")
    return tmp_path / "recordings"


def _set(key, value):
    from console.globalconfig import config_set

    config_set(key=key, value=value, actor="test")


def opened(path, fmt="stream", max_bytes=1 << 20, keystrokes=False):
    return RecordingOpen(1, path, fmt, keystrokes, max_bytes, {"vm": "vm-a", "session": 1})


def test_a_stream_recording_keeps_what_the_client_got_with_its_timing(recordings_dir):
    path = recordings_dir / "a.rec"
    recorder = Recorder(opened(path))
    recorder.to_client(b"RFB 003.008\n")
    recorder.input({"key": "down"})
    recorder.to_client(b"an update")
    recorder.close()
    header, records = stream_records(path.read_bytes())
    assert header["vm"] == "vm-a"
    assert [(kind, data) for _, kind, data in records] == [
        (0, b"RFB 003.008\n"),
        (1, b'{"key": "down"}'),
        (0, b"an update"),
    ]
    assert records[0][0] <= records[2][0]  # ms since the start, in order
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_worker_killed_mid_write_leaves_a_readable_recording(recordings_dir):
    path = recordings_dir / "killed.rec"
    recorder = Recorder(opened(path))
    recorder.to_client(b"whole")
    recorder.to_client(b"cut short by the kill")
    recorder.close()
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # the last write only half on disk
    _, records = stream_records(path.read_bytes())
    assert [data for _, _, data in records] == [b"whole"]


async def test_on_the_event_loop_records_are_written_within_a_tenth_of_a_second(recordings_dir):
    import asyncio

    path = recordings_dir / "buffered.rec"
    recorder = Recorder(opened(path))
    await asyncio.sleep(0.15)
    start = path.stat().st_size
    recorder.to_client(b"an echo")  # small: buffered, not a write per message
    assert path.stat().st_size == start
    await asyncio.sleep(0.15)
    assert path.stat().st_size == start + 9 + len(b"an echo")  # written by the timer
    recorder.to_client(bytes(300 * 1024))  # large: written at once
    assert path.stat().st_size == start + 2 * 9 + len(b"an echo") + 300 * 1024
    recorder.close()
    _, records = stream_records(path.read_bytes())
    assert [len(data) for _, _, data in records] == [7, 300 * 1024]


def test_the_size_cap_and_a_full_disk_end_the_recording_not_the_console(recordings_dir):
    recorder = Recorder(opened(recordings_dir / "capped.rec", max_bytes=200))
    for _ in range(20):
        recorder.to_client(b"x" * 50)
    assert not recorder.recording and "size cap" in recorder.note
    assert (recordings_dir / "capped.rec").stat().st_size <= 200
    full = Recorder(opened(recordings_dir / "full.rec"))
    os.close(full._fd)
    full._fd = os.open("/dev/full", os.O_WRONLY)  # what a full disk answers: ENOSPC
    full.to_client(b"a frame")
    assert not full.recording and "No space left on device" in full.note


def test_a_serial_recording_is_asciicast_v2(recordings_dir):
    path = recordings_dir / "serial.cast"
    recorder = Recorder(opened(path, fmt="asciicast", keystrokes=True))
    recorder.to_client("héllo".encode()[:2])  # a character split across reads
    recorder.to_client("héllo".encode()[2:] + b"\r\n")
    recorder.input({"text": "ls\r"})
    recorder.close()
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and header["width"] == 80
    events = [json.loads(line) for line in lines[1:]]
    assert "".join(text for _, kind, text in events if kind == "o") == "héllo\r\n"
    assert [text for _, kind, text in events if kind == "i"] == ["ls\r"]


def test_the_policy_follows_the_settings_and_the_vms_switch(vm):
    assert not recording_policy(vm).record  # off by default
    _set("console.recording", "per-vm")
    assert not recording_policy(vm).record
    vm.record_console = True
    assert recording_policy(vm).record
    _set("console.recording", "all")
    vm.record_console = False
    policy = recording_policy(vm)
    assert policy.record and not policy.keystrokes and policy.max_bytes == 512 << 20
    _set("console.recordKeystrokes", "true")
    assert recording_policy(vm).keystrokes


def _recording(user, vm, days_old=0, path="2026/01/01/session.rec"):
    session = ConsoleSession.objects.create(user=user, vm=vm, via="channels", protocol="vnc")
    recording = ConsoleRecording.objects.create(
        session=session, vm=vm, user=user, protocol="vnc", format="stream", path=path
    )
    ConsoleRecording.objects.filter(pk=recording.pk).update(
        started_at=timezone.now() - timedelta(days=days_old)
    )
    return recording


def test_retention_deletes_old_recordings_and_their_files(user, vm, recordings_dir):
    old = _recording(user, vm, days_old=31, path="old.rec")
    new = _recording(user, vm, days_old=1, path="new.rec")
    recordings_dir.mkdir()
    (recordings_dir / "old.rec").write_bytes(MAGIC)
    (recordings_dir / "new.rec").write_bytes(MAGIC)
    assert recordings_sweep() == 1
    assert not (recordings_dir / "old.rec").exists() and (recordings_dir / "new.rec").exists()
    assert list(ConsoleRecording.objects.values_list("pk", flat=True)) == [new.pk]
    assert old.pk != new.pk


def test_a_recording_is_played_by_staff_and_by_its_user_only_if_allowed(user, other_user, staff_user, vm):
    recording = _recording(user, vm)
    assert recording_may_play(user=staff_user, recording=recording)
    assert not recording_may_play(user=user, recording=recording)
    _set("console.recordingPlayback", "staff-and-user")
    assert recording_may_play(user=user, recording=recording)
    assert not recording_may_play(user=other_user, recording=recording)


def test_a_path_outside_the_recordings_directory_is_refused(user, vm):
    with pytest.raises(ValueError, match="outside"):
        recording_file(_recording(user, vm, path="../../etc/passwd"))


def test_others_cannot_play_a_recording_by_page_api_or_file(
    client, user, other_user, staff_user, vm, recordings_dir
):
    _set("console.recordingPlayback", "staff-and-user")
    recording = _recording(user, vm, path="mine.rec")
    recordings_dir.mkdir()
    (recordings_dir / "mine.rec").write_bytes(MAGIC + b'{"vm": "vm-a"}\n')
    for path in (
        f"/recordings/{recording.pk}/",
        f"/recordings/{recording.pk}/data",
        f"/api/v1/sessions/{recording.session_id}/recording",
    ):
        client.force_login(other_user)
        assert client.get(path).status_code == 404, path
        client.force_login(user)
        assert client.get(path).status_code == 200, path
        client.force_login(staff_user)
        assert client.get(path).status_code == 200, path
    assert RecordingPlayback.objects.filter(via="api").count() == 2
    assert RecordingPlayback.objects.filter(via="page").count() == 2
    client.force_login(other_user)
    assert (
        client.get("/recordings/").status_code == 200
        and "mine" not in client.get("/recordings/").content.decode()
    )


async def test_a_recorded_vnc_session_through_the_gate(user, vm, recordings_dir):
    await database_sync_to_async(_set)("console.recording", "all")
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vm, echo.port)
        comm = await communicator(vm.id, token, user)
        assert (await comm.connect())[0]
        await rfb_handshake(comm)
        sent = KEY + cut(b"pasted") + POINTER
        await comm.send_to(bytes_data=sent)
        assert await receive_exactly(comm, len(sent)) == sent
        await comm.disconnect()
    recording = await database_sync_to_async(ConsoleRecording.objects.get)()
    assert recording.ended_at is not None and recording.format == "stream" and not recording.keystrokes
    _, records = stream_records(
        await database_sync_to_async(lambda: recording_file(recording).read_bytes())()
    )
    received = b"".join(data for _, kind, data in records if kind == 0)
    # Everything the client got, the proxy's own handshake answers first: noVNC replays it.
    assert received == b"RFB 003.008\n" + bytes([1, 1]) + bytes(4) + b"HELLO" + sent
    events = [json.loads(data) for _, kind, data in records if kind == 1]
    assert events == [{"key": "down"}]  # a key, not which one (console.recordKeystrokes is off)
    assert recording.bytes == len(
        await database_sync_to_async(lambda: recording_file(recording).read_bytes())()
    )


async def test_a_recording_that_cannot_start_leaves_the_console_and_says_why(user, vm, recordings_dir):
    await database_sync_to_async(_set)("console.recording", "all")
    recordings_dir.write_text("a file where the directory should be")
    async with EchoServer() as echo:
        token = await database_sync_to_async(make_ticket)(user, vm, echo.port)
        comm = await communicator(vm.id, token, user)
        assert (await comm.connect())[0]
        await rfb_handshake(comm)  # the console works
        await comm.disconnect()
    recording = await database_sync_to_async(ConsoleRecording.objects.get)()
    assert recording.ended_at is not None and recording.bytes == 0
    assert recording.note.startswith("not recorded:")


# -- SPICE recordings played back by the replay endpoint ------------------------------------------


def _spice_console_recorded(user, vm, recordings_dir):
    """Two channels of one SPICE console (one ticket), as the gate records them."""
    from console.models import ConsoleTicket
    from console.recordings import recording_start

    token = make_ticket(user, vm, 5900)
    ticket = ConsoleTicket.objects.order_by("-id").first()
    assert token and ticket is not None
    recordings = {}
    for channel, kind, stream in (
        ("main", 1, [b"main link reply", b"\0\0\0\0", b"main init"]),
        ("display", 2, [b"display link reply", b"\0\0\0\0", b"draw 1", b"draw 2"]),
    ):
        session = ConsoleSession.objects.create(
            user=user, vm=vm, via="channels", protocol="spice", ticket=ticket
        )
        policy = recording_policy(vm)
        opened_ = recording_start(session=session, ticket=ticket, policy=policy)
        recorder = Recorder(opened_)
        recorder.input({"spice_channel": channel, "type": kind})
        for data in stream:
            recorder.to_client(data)
        recorder.close()
        ConsoleRecording.objects.filter(pk=opened_.recording_id).update(channel=channel, protocol="spice")
        recordings[channel] = opened_.recording_id
    return recordings


async def _replay_socket(user, recording_id, *, origin=True, speed=0, channel_type=2, split=False):
    from channels.testing import WebsocketCommunicator

    from console.proxy.spice import SpiceLink
    from portal.asgi import application
    from tests.helpers import HOST, ORIGIN_HEADER, session_cookie

    cookie = await database_sync_to_async(session_cookie)(user)
    headers = [HOST, cookie] + ([ORIGIN_HEADER] if origin else [(b"origin", b"https://evil.example")])
    path = f"/ws/recording/{recording_id}/spice/?speed={speed}"
    comm = WebsocketCommunicator(application, path, headers=headers, subprotocols=["binary"])
    comm.scope["client"] = ["127.0.0.1", 50000]
    assert (await comm.connect())[0]
    link = SpiceLink(0, channel_type, 0, [0b1001], []).to_bytes()
    if split:  # a link message in two frames is one link message
        await comm.send_to(bytes_data=link[:7])
        await comm.send_to(bytes_data=link[7:])
    else:
        await comm.send_to(bytes_data=link)
    return comm


async def _received(comm) -> tuple[list[bytes], list[str], int | None]:
    """What the replay sends until its end (a text frame) or its close (with the code)."""
    binary: list[bytes] = []
    text: list[str] = []
    while True:
        message = await comm.receive_output(timeout=5)
        if message["type"] == "websocket.close":
            return binary, text, message["code"]
        if message.get("bytes"):
            binary.append(message["bytes"])
        else:
            text.append(message["text"])
            return binary, text, None


async def test_a_spice_recording_is_replayed_channel_by_channel_as_the_client_got_it(
    user, staff_user, vm, recordings_dir
):
    await database_sync_to_async(_set)("console.recording", "all")
    recordings = await database_sync_to_async(_spice_console_recorded)(user, vm, recordings_dir)
    # The display channel's page: each channel the page links gets its own channel's recording.
    comm = await _replay_socket(staff_user, recordings["display"], split=True)
    binary, text, _ = await _received(comm)
    assert binary == [b"display link reply", b"\0\0\0\0", b"draw 1", b"draw 2"]
    assert json.loads(text[0]) == {"end": "the end of the recording"}
    await comm.disconnect()
    comm = await _replay_socket(staff_user, recordings["display"], channel_type=1)
    binary, _, _ = await _received(comm)
    assert binary == [b"main link reply", b"\0\0\0\0", b"main init"]
    await comm.disconnect()
    # A channel nobody recorded: SPICE's "channel not available" in its link reply.
    comm = await _replay_socket(staff_user, recordings["display"], channel_type=3)
    binary, _, code = await _received(comm)
    assert binary[0][:4] == b"REDQ" and binary[0][16:20] == (9).to_bytes(4, "little")
    assert code == 4011
    # The main channel's link is the playback, audited.
    played = RecordingPlayback.objects.filter(recording_id=recordings["display"])
    assert await database_sync_to_async(played.count)() == 1


async def test_the_spice_replay_checks_who_asks(user, other_user, vm, recordings_dir):
    await database_sync_to_async(_set)("console.recording", "all")
    recordings = await database_sync_to_async(_spice_console_recorded)(user, vm, recordings_dir)
    for who, origin, code in ((other_user, True, 4008), (user, True, 4008), (user, False, 4001)):
        comm = await _replay_socket(who, recordings["display"], origin=origin)
        assert (await comm.receive_output(timeout=5))["code"] == code
        await comm.disconnect()
    await database_sync_to_async(_set)("console.recordingPlayback", "staff-and-user")
    comm = await _replay_socket(user, recordings["display"])
    binary, _, _ = await _received(comm)  # the session's own user, when the policy says so
    assert binary[-1] == b"draw 2"
    await comm.disconnect()


def test_the_vms_admins_play_its_recordings_when_the_policy_says_so_and_lose_them_with_the_grant(
    client, user, other_user, vm
):
    """A user granted admin on the VM (here through a group) may play another user's recording
    of it under staff-and-vm-admins; a viewer may not; taking the grant back takes it away."""
    from django.contrib.auth.models import Group

    from console.models import VmGrant

    recording = _recording(user, vm, path="theirs.rec")
    team = Group.objects.create(name="vm-admins")
    other_user.groups.add(team)
    grant = VmGrant.objects.create(vm=vm, group=team, role=VmGrant.Role.ADMIN)
    assert not recording_may_play(user=other_user, recording=recording)  # the policy: staff
    _set("console.recordingPlayback", "staff-and-vm-admins")
    assert recording_may_play(user=other_user, recording=recording)
    assert recording_may_play(user=user, recording=recording)  # the VM's owner is its admin
    client.force_login(other_user)
    assert f"/recordings/{recording.pk}/" in client.get("/recordings/").content.decode()
    grant.role = VmGrant.Role.VIEWER
    grant.save()
    assert not recording_may_play(user=other_user, recording=recording)
    assert f"/recordings/{recording.pk}/" not in client.get("/recordings/").content.decode()
    _set("console.recordingPlayback", "staff-vm-admins-and-user")
    assert not recording_may_play(user=other_user, recording=recording)  # a viewer, not its user

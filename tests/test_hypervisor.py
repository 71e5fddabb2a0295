"""The libvirt adapter against libvirt's own test driver (a fake hypervisor in-process)."""

import asyncio
import uuid
from types import SimpleNamespace

import pytest

from console.domainxml import domain_xml_build, graphics_endpoint
from console.hypervisor import (
    MISSING,
    DomainNotFound,
    DomainNotRunning,
    DomainRunning,
    HypervisorError,
    HypervisorUnavailable,
    hypervisor_for,
)

TEST_URI = "test:///default"


def vm_spec(name):
    return SimpleNamespace(
        name=name,
        uuid=uuid.uuid4(),
        description="",
        vcpus=1,
        memory_mib=64,
        disk_image="",
        boot_menu=False,
        kernel="",
        initrd="",
        kernel_cmdline="",
        serial_console=True,
        video="standard",
    )


@pytest.fixture
def hv():
    return hypervisor_for(TEST_URI)


def test_connection_is_shared_per_uri(hv):
    assert hypervisor_for(TEST_URI) is hv
    assert hv.version()


def test_states_and_missing(hv):
    assert hv.states()["test"] == "running"  # the test driver's built-in domain
    assert hv.state("test") == "running"
    assert hv.state("no-such-domain") == MISSING


def test_define_start_destroy_undefine(hv):
    name = f"t-{uuid.uuid4().hex[:8]}"
    xml = domain_xml_build(vm_spec(name), mode="vnc", listen_address="127.0.0.1", password="pw")
    hv.define_and_start(name, xml)
    assert hv.state(name) == "running"
    with pytest.raises(DomainRunning):
        hv.define_and_start(name, xml)
    hv.destroy(name)
    assert hv.state(name) == "shut off"
    with pytest.raises(DomainNotRunning):
        hv.destroy(name)
    hv.undefine(name)
    assert hv.state(name) == MISSING


def test_readable_errors(hv):
    with pytest.raises(DomainNotFound, match="no-such-domain"):
        hv.xml("no-such-domain")
    with pytest.raises(HypervisorError):
        hv.define_and_start("x", "<domain>not valid</domain>")


def test_unreachable_daemon_is_unavailable():
    hv = hypervisor_for("qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    with pytest.raises(HypervisorUnavailable, match="nonexistent"):
        hv.states()


def test_live_xml_reader_on_the_test_driver(hv):
    xml = hv.xml("test")
    assert graphics_endpoint(xml) is None  # the test domain has no console


async def test_refuses_to_run_on_the_event_loop(hv):
    with pytest.raises(RuntimeError, match="thread"):
        hv.states()
    assert await asyncio.to_thread(hv.states)


def test_a_serial_streams_writes_and_release_happen_on_libvirts_event_loop_only():
    """libvirt 9.0's client crashes when a connection's calls come from several threads
    (CVE-2024-4418): after opening, a serial stream and its own connection are used on the
    event loop thread only — a write from another thread is sent there, and the release (the
    callback removed, the stream aborted, the connection closed) happens there."""
    import threading

    from console.hypervisor.libvirt import EVENT_THREAD, LibvirtSerialStream, _event_loop_ensure

    _event_loop_ensure()
    released, sent = threading.Event(), threading.Event()
    seen: list[tuple[str, str]] = []

    def record(call: str) -> None:
        seen.append((call, threading.current_thread().name))

    class Stream:  # the calls LibvirtSerialStream makes, and on which thread
        def eventAddCallback(self, *args):  # noqa: N802 - libvirt's names
            pass

        def eventUpdateCallback(self, events):  # noqa: N802
            pass

        def send(self, data):
            record("send")
            sent.set()
            return len(data)

        def eventRemoveCallback(self):  # noqa: N802
            record("remove")

        def abort(self):
            record("abort")

    class Conn:
        def close(self):
            record("close")
            released.set()

    serial = LibvirtSerialStream(Stream(), on_output=lambda data: None, conn=Conn())
    serial.write(b"ls\n")
    assert sent.wait(5)
    serial.close()
    assert released.wait(5)
    assert seen == [(call, EVENT_THREAD) for call in ("send", "remove", "abort", "close")]
    serial.write(b"late")  # after the end: ignored, nothing sent

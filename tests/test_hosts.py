"""Host health checks: however many ask (anonymous /readyz, metrics scrapes, admin), each host
is asked once at a time, a recent answer is reused, and nobody waits past CHECK_TIMEOUT."""

import socket
import threading
import time

import pytest

from console import hosts
from console.models import Host
from tests.helpers import TEST_NODE_URI

pytestmark = pytest.mark.django_db(transaction=True)


class Tarpit:
    """A TCP port that accepts connections and never says a word (a host gone half-way)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_hanging_host_is_checked_once_however_many_ask_and_starves_no_other(monkeypatch):
    monkeypatch.setattr(hosts, "CHECK_TIMEOUT", 2.0)
    tarpit = Tarpit()
    try:
        hanging = Host.objects.create(name="hanging", uri=f"qemu+ssh://root@127.0.0.1:{tarpit.port}/system")
        local = Host.objects.create(name="testnode", uri=TEST_NODE_URI)
        results, took = [], []

        def ask() -> None:
            started = time.monotonic()
            results.append(hosts.host_checks([hanging, local], max_age=hosts.RECENT_SECONDS))
            took.append(time.monotonic() - started)

        askers = [threading.Thread(target=ask) for _ in range(12)]  # more than the pool's 8 threads
        for thread in askers:
            thread.start()
        for thread in askers:
            thread.join(10)
        assert len(results) == 12 and max(took) < hosts.CHECK_TIMEOUT + 1.5
        assert all(r[local.pk].ok for r in results)  # the healthy host answered every caller
        assert not any(r[hanging.pk].ok for r in results)
        assert len(tarpit.accepted) == 1  # one check of the hanging host, shared by all
    finally:
        tarpit.close()


def test_a_recent_answer_is_reused_and_a_changed_uri_is_another_host():
    host = Host.objects.create(name="testnode", uri=TEST_NODE_URI)
    first = hosts.host_checks([host], max_age=hosts.RECENT_SECONDS)[host.pk]
    assert first.ok
    host.uri = "qemu+ssh://root@127.0.0.1:1/system"  # nothing listens there
    again = hosts.host_checks([host], max_age=hosts.RECENT_SECONDS)[host.pk]
    assert not again.ok

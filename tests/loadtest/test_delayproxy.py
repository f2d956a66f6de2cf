"""The delaying proxy: bytes intact both ways, every round trip pays the RTT, a clean teardown."""

import os
import socket
import threading
import time

import pytest

from loadtest.delayproxy import DelayProxy

RTT_MS = 40.0


@pytest.fixture
def echo_server():
    """Echoes every byte back; records each connection's end so teardown can be checked."""
    listener = socket.create_server(("127.0.0.1", 0))
    closed = threading.Event()

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(client,), daemon=True).start()

    def echo(client: socket.socket) -> None:
        with client:
            while data := client.recv(65536):
                client.sendall(data)
        closed.set()

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[:2], closed
    listener.close()


def round_trip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    received = bytearray()
    while len(received) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "proxy closed the connection early"
        received += chunk
    return bytes(received)


def test_a_megabyte_each_way_arrives_intact_and_in_order(echo_server):
    target, _ = echo_server
    payload = os.urandom(1 << 20)
    with (
        DelayProxy(target, rtt_ms=1.0) as proxy,
        socket.create_connection((proxy.host, proxy.port), timeout=30) as sock,
    ):
        assert round_trip(sock, payload) == payload


def test_every_round_trip_pays_at_least_the_rtt_and_zero_adds_none(echo_server):
    target, _ = echo_server
    with DelayProxy(target, rtt_ms=RTT_MS) as delayed, DelayProxy(target, rtt_ms=0) as direct:
        timings = {}
        for name, proxy in (("delayed", delayed), ("direct", direct)):
            with socket.create_connection((proxy.host, proxy.port), timeout=30) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                samples = []
                for n in range(5):
                    began = time.perf_counter()
                    assert round_trip(sock, b"ping %d" % n) == b"ping %d" % n
                    samples.append(time.perf_counter() - began)
                timings[name] = samples
    # The proxy wakes early by its scheduling lateness, so the typical round trip is on time.
    assert sorted(timings["delayed"])[2] >= 0.9 * RTT_MS / 1000
    assert sorted(timings["direct"])[2] < sorted(timings["delayed"])[2]
    assert delayed.process is None and direct.process is None


def test_a_client_that_hangs_up_closes_the_upstream_and_stop_frees_the_port(echo_server):
    target, upstream_closed = echo_server
    proxy = DelayProxy(target, rtt_ms=2.0).start()
    pid = proxy.process.pid
    with socket.create_connection((proxy.host, proxy.port), timeout=30) as sock:
        assert round_trip(sock, b"hello") == b"hello"
    assert upstream_closed.wait(10)
    assert proxy.cpu_seconds() >= 0
    proxy.stop()
    assert not os.path.exists(f"/proc/{pid}")  # exited and reaped
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=5).close()

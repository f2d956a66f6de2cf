"""Open loop against a stub server that stalls once: the tail shows the stall as users feel it."""

import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadtest.generator import LoadPlan, run_load

RATE = 200.0
DURATION_S = 10.0
STALL_AFTER_S = 4.0
STALL_S = 1.0
LINGER_ZERO = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets the connection


class StallingServer(ThreadingHTTPServer):
    """Answers `{}` at once, except that every request in one 1 s window waits for its end."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.first_request: float | None = None
        self.lock = threading.Lock()

    def stall_until(self, now: float) -> float:
        with self.lock:
            if self.first_request is None:
                self.first_request = now
        begin = self.first_request + STALL_AFTER_S
        return begin + STALL_S if begin <= now < begin + STALL_S else now


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        now = time.monotonic()
        wake = self.server.stall_until(now)
        if wake > now:
            time.sleep(wake - now)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def stalling_server():
    server = StallingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_one_second_stall_sets_the_p99_not_the_normal_service_time(stalling_server):
    host, port = stalling_server.server_address
    plan = LoadPlan(
        host, port, mode="hello", concurrency=4, duration=DURATION_S, processes=1, rate=RATE,
        max_connections=16,
    )  # fmt: skip
    result = run_load(plan)
    total = result.total
    histogram = result.total_histogram()
    scheduled = RATE * DURATION_S
    # Nothing skipped: every scheduled request was answered, or counted as never sent when a busy
    # machine left it queued at the end; the server itself failed none.
    assert total.requests + total.errors == pytest.approx(scheduled, abs=2)
    assert set(result.error_kinds) <= {"not sent: no free connection"}, result.error_kinds
    # The ~200 requests scheduled during the stall waited for its end: latencies spread from ~1 s
    # down to ~0, so at least ~100 waited half a second or more, and p99 is most of the stall.
    # (Only lower bounds on the slow side: a busy machine can add latency, never remove it.)
    waited_half_a_stall = sum(
        item.count_at_value_iterated_to
        for item in histogram.get_recorded_iterator()
        if item.value_iterated_to >= 500_000
    )
    assert waited_half_a_stall >= 0.04 * scheduled
    assert total.p99_ms >= 0.8 * STALL_S * 1000
    assert total.p50_ms <= total.p99_ms / 4
    # The bound kept the connections to 16 and the rest queued as late, each timed from its slot.
    assert result.connections <= 16
    assert result.late > 0
    # The per-second series shows the stall in the seconds it touched (4-6 s after the first
    # request, give or take the start-up).
    stalled = [row for row in result.per_second if 3 <= row["second"] <= 7]
    assert max(row["p99_ms"] for row in stalled) >= 0.5 * STALL_S * 1000


def test_a_connection_reset_is_an_error_and_is_not_sent_again():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        received = []

        def reset_every_connection() -> None:
            listener.settimeout(10)
            for _ in range(3):
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    return
                received.append(client.recv(65536))
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
                client.close()  # RST instead of FIN

        thread = threading.Thread(target=reset_every_connection, daemon=True)
        thread.start()
        plan = LoadPlan(
            "127.0.0.1", listener.getsockname()[1], mode="hello", concurrency=1, duration=0.5,
            processes=1, rate=2, max_connections=1,
        )  # fmt: skip
        result = run_load(plan)
        thread.join(15)
    assert result.total.requests == 0
    assert result.total.errors == 1
    assert result.resends == 0
    assert len(received) == 1

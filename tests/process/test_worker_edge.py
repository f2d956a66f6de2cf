"""Clients that stall, poison or exhaust a worker: real gunicorn, no proxy in front."""

import concurrent.futures
import contextlib
import http.client
import socket
import time

import pytest

from feedsvc.core.limits import MAX_LIMIT, STORY_MAX_CHARS
from loadtest.harness.gunicorn import START_DEADLINE_SECONDS, GunicornServer
from tests.support.processes import open_files

WORKER_CLASSES = ["meinheld", "gthread"]
# orjson writes a control character as \\u00XX: 6 bytes per character, the most any takes.
WIDEST_CHARACTER = "\x01"
# Posts in the page a stalled client asks for: 6 MB of JSON, more than both socket buffers hold.
STALLED_PAGE_POSTS = 100
# Seconds a request that should be answered at once may take on a busy machine.
PROMPT_SECONDS = 10.0


def start(server: GunicornServer, worker_class: str, workers: int = 1, **env: str) -> None:
    server.start({"FEED_WORKER_CLASS": worker_class, **env}, workers=workers)
    server.wait_ready(workers=workers)


def raw_exchange(port: int, raw: bytes) -> bytes:
    """Send raw bytes on a fresh connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=PROMPT_SECONDS) as connection:
        connection.sendall(raw)
        received = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := connection.recv(65536):
                received += chunk
        return received


def client_sockets(pid: int) -> int:
    return sum(target.startswith("socket:") for target in open_files(pid))


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_clients_that_stop_reading_never_stall_the_worker(
    gunicorn_server: GunicornServer, worker_class: str
) -> None:
    """Issue 13, finding 1: a response write has a total deadline and blocks no other request."""
    start(gunicorn_server, worker_class, FEED_TIMEOUT="20")
    (worker,) = gunicorn_server.worker_pids()
    ada = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json
    widest = {"subject": "s", "story": WIDEST_CHARACTER * STORY_MAX_CHARS}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as clients:
        statuses = clients.map(
            lambda _: gunicorn_server.request("POST", f"{ada['link']}/outbound", widest).status,
            range(STALLED_PAGE_POSTS),
        )
        assert set(statuses) == {200}
    sockets_before = client_sockets(worker)

    stalled = []
    for _ in range(2):
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(("127.0.0.1", gunicorn_server.port))
        page = f"{ada['link']}/outbound?limit={MAX_LIMIT}"
        reader.sendall(f"GET {page} HTTP/1.1\r\nHost: feed\r\n\r\n".encode())
        stalled.append(reader)
    try:
        for _ in range(5):
            health = http.client.HTTPConnection("127.0.0.1", gunicorn_server.port, PROMPT_SECONDS)
            health.request("GET", "/health")
            assert health.getresponse().status == 200
            health.close()
            time.sleep(0.5)
        # After the write deadline (FEED_TIMEOUT) the worker has closed both stalled connections.
        give_up = time.monotonic() + START_DEADLINE_SECONDS + 20
        while client_sockets(worker) > sockets_before:
            assert time.monotonic() < give_up, "stalled connections were never closed"
            time.sleep(0.5)
    finally:
        for reader in stalled:
            reader.close()
    assert gunicorn_server.worker_pids() == [worker]
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_connection_whose_response_waited_for_the_socket_serves_its_next_request(
    gunicorn_server: GunicornServer, worker_class: str
) -> None:
    """meinheld watched every connection with EPOLLEXCLUSIVE, which epoll never lets change: one
    first watched for writing stayed so, and its next request hung while the loop spun (nginx
    reuses upstream connections: a POST through it got no answer)."""
    start(gunicorn_server, worker_class)
    ada = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json
    widest = {"subject": "s", "story": WIDEST_CHARACTER * STORY_MAX_CHARS}
    for _ in range(STALLED_PAGE_POSTS):
        assert gunicorn_server.request("POST", f"{ada['link']}/outbound", widest).status == 200
    page = f"{ada['link']}/outbound?limit={MAX_LIMIT}"
    connection = http.client.HTTPConnection("127.0.0.1", gunicorn_server.port, PROMPT_SECONDS)
    try:
        for path in (page, page, "/health"):
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            assert response.status == 200
    finally:
        connection.close()
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
@pytest.mark.parametrize(
    "refused",
    [
        b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: feed\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    ],
    ids=["connect", "upgrade-h2c"],
)
def test_a_refused_request_leaves_nothing_to_fail_the_next_one(
    gunicorn_server: GunicornServer, worker_class: str, refused: bytes
) -> None:
    """Issue 13, finding 2: meinheld left a Python error set that failed the next request."""
    start(gunicorn_server, worker_class)
    statuses = []
    for number in range(10):
        assert raw_exchange(gunicorn_server.port, refused).startswith(b"HTTP/1.")
        created = gunicorn_server.request("POST", "/participant", {"name": f"P{number}"})
        statuses.append(created.status)
    assert statuses == [200] * 10
    assert gunicorn_server.stop() == 0


def test_connections_over_the_fd_limit_are_refused_at_once(gunicorn_server: GunicornServer) -> None:
    """Issue 13, finding 3: beyond the worker's fd limit a connection is closed, never left hanging,
    and idle keep-alive connections timing out do not end the worker."""
    start_env = {"FEED_WORKER_CLASS": "meinheld", "FEED_KEEPALIVE": "2"}
    gunicorn_server.start(start_env, workers=1, fd_limit=160)
    gunicorn_server.wait_ready(workers=1)
    (worker,) = gunicorn_server.worker_pids()

    address = ("127.0.0.1", gunicorn_server.port)
    connections = [socket.create_connection(address) for _ in range(150)]
    served = refused = 0
    try:
        for connection in connections:
            connection.settimeout(PROMPT_SECONDS)
            try:
                connection.sendall(b"GET /health HTTP/1.1\r\nHost: feed\r\n\r\n")
                answer = connection.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                answer = b""
            if answer.startswith(b"HTTP/1.1 200"):
                served += 1
            else:
                assert answer == b"", answer  # closed by the server; a hang raises TimeoutError
                refused += 1
    finally:
        for connection in connections:
            connection.close()
    assert served > 0 and refused > 0, (served, refused)

    time.sleep(4)  # the served ones were kept alive, then timed out (FEED_KEEPALIVE)
    assert gunicorn_server.request("GET", "/health").status == 200
    assert gunicorn_server.worker_pids() == [worker]
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_body_over_the_limit_gets_the_json_413(
    gunicorn_server: GunicornServer, worker_class: str
) -> None:
    """Issue 13, finding 4: gthread reset the connection instead of answering 413."""
    start(gunicorn_server, worker_class)
    ada = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json
    story = {"subject": "s", "story": "x" * 100_000}

    for _ in range(3):
        response = gunicorn_server.request("POST", f"{ada['link']}/outbound", story)
        assert response.status == 413
        assert response.json["title"]
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_unknown_methods_are_one_metric_label(
    gunicorn_server: GunicornServer, worker_class: str
) -> None:
    """Issue 13, finding 5: a label per random method made /metrics grow without bound."""
    start(gunicorn_server, worker_class)
    for number in range(20):
        raw_exchange(
            gunicorn_server.port, f"FOO{number} /health HTTP/1.1\r\nHost: feed\r\n\r\n".encode()
        )
    gunicorn_server.request("GET", "/health")

    metrics = gunicorn_server.request("GET", "/metrics").body.decode()
    methods = {
        line.split('method="', 1)[1].split('"', 1)[0]
        for line in metrics.splitlines()
        if line.startswith("feed_http_request_duration_seconds_count{")
    }
    assert "GET" in methods
    assert not any(method.startswith("FOO") for method in methods), methods
    assert gunicorn_server.stop() == 0

"""nginx in front of a real gunicorn (meinheld, gthread): the edge holds what workers cannot."""

from __future__ import annotations

import contextlib
import http.client
import re
import selectors
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from feedsvc.compose import nginx
from feedsvc.core.config import Config
from loadtest.harness.gunicorn import GunicornServer, HttpResponse
from loadtest.harness.nginx import NGINX_TEMPLATE, check_config, main_config
from loadtest.harness.ports import free_port
from tests.support.nginx import NginxProxy, nginx_binary
from tests.support.processes import killed_at_exit

MAX_BODY_BYTES = 65536
CONNECTIONS_PER_CLIENT = 8
# Clients that ask for a large page and never read it: twice the workers.
NON_READERS = 4
# A page this large cannot sit in socket buffers: 400 posts of 10,000 U+0001, 6 bytes each in JSON.
BIG_PAGE_POSTS = 400
BIG_STORY = "\u0001" * 10_000
# A generous bound for one request on a contended machine; a stalled worker takes 30 s and more.
ANSWER_DEADLINE_SECONDS = 15.0
# nginx's own $request_id: 32 hex digits.
NGINX_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Edge:
    """gunicorn and the nginx in front of it."""

    server: GunicornServer
    proxy: NginxProxy


@pytest.fixture(scope="module", params=["meinheld", "gthread"])
def edge(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Edge]:
    base = tmp_path_factory.mktemp(f"edge-{request.param}")
    env = {"FEED_WORKER_CLASS": request.param, "FEED_MAX_BODY_BYTES": str(MAX_BODY_BYTES)}
    with killed_at_exit(GunicornServer(base / "gunicorn.log")) as server:
        server.start(env, workers=2)
        server.wait_ready(workers=2)
        proxy = NginxProxy(base, f"127.0.0.1:{server.port}", CONNECTIONS_PER_CLIENT)
        try:
            proxy.start(env)
            yield Edge(server, proxy)
        finally:
            proxy.stop()


def send_raw(port: int, data: bytes) -> HttpResponse:
    """Bytes as they come on a fresh connection, and the one response they get."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_DEADLINE_SECONDS) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return HttpResponse(response.status, response.headers, response.read())


def assert_json_error(response: HttpResponse, status: int) -> None:
    assert response.status == status, response.body
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.json) == {"title", "description"}
    assert response.json["title"].startswith(str(status))


def health_answers(port: int) -> bool:
    """GET /health on a fresh connection answers 200 within the deadline."""
    try:
        response = send_raw(
            port, b"GET /health HTTP/1.1\r\nHost: feed\r\nConnection: close\r\n\r\n"
        )
    except OSError:
        return False
    return response.status == 200


def test_clients_that_never_read_a_large_page_do_not_stall_the_service(edge: Edge) -> None:
    author = edge.proxy.request("POST", "/participant", {"name": "Big"}).json
    for _ in range(BIG_PAGE_POSTS):
        posted = edge.proxy.request(
            "POST", f"{author['link']}/outbound", {"subject": "big", "story": BIG_STORY}
        )
        assert posted.status == 200, posted.body
    page = f"GET {author['link']}/outbound?limit={BIG_PAGE_POSTS} HTTP/1.1\r\nHost: feed\r\n\r\n"

    with contextlib.ExitStack() as stack:
        for _ in range(NON_READERS):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", edge.proxy.port)))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(page.encode())
        for _ in range(3):
            assert health_answers(edge.proxy.port)
        assert edge.proxy.request("GET", author["link"]).status == 200


@pytest.mark.parametrize(
    "refused",
    [
        b"CONNECT feed:1 HTTP/1.1\r\nHost: feed:1\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: feed\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        b"GET /participant/1 HTTP/1.1\r\nHost: feed\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\n\r\n",
    ],
    ids=["connect", "h2c", "websocket"],
)
def test_connect_and_upgrades_are_refused_and_the_next_requests_are_served(
    edge: Edge, refused: bytes
) -> None:
    for _ in range(5):
        assert_json_error(send_raw(edge.proxy.port, refused), 400)

    for number in range(10):
        created = edge.proxy.request("POST", "/participant", {"name": f"After {number}"})
        assert created.status == 200, created.body


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        # One header line over 4 KB; all headers over 16 KB.
        (b"GET /health HTTP/1.1\r\nHost: feed\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
        (
            b"GET /health HTTP/1.1\r\nHost: feed\r\n"
            + b"".join(b"X-Header-%d: %s\r\n" % (i, b"a" * 3000) for i in range(8))
            + b"\r\n",
            431,
        ),
        (b"GET /outbound?keywords=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: feed\r\n\r\n", 414),
        (
            b"POST /participant HTTP/1.1\r\nHost: feed\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1),
            413,
        ),
        (
            b"POST /participant HTTP/1.1\r\nHost: feed\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n"
            % (MAX_BODY_BYTES + 1)
            + b"a" * (MAX_BODY_BYTES + 1)
            + b"\r\n0\r\n\r\n",
            413,
        ),
        # Ambiguous framing: both Content-Length and chunked, or an encoding nobody here reads.
        (
            b"POST /participant HTTP/1.1\r\nHost: feed\r\nContent-Type: application/json\r\n"
            b"Content-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'c\r\n{"name":"a"}\r\n0\r\n\r\n',
            400,
        ),
        (
            b"POST /participant HTTP/1.1\r\nHost: feed\r\nContent-Type: application/json\r\n"
            b'Content-Length: 12\r\nTransfer-Encoding: gzip\r\n\r\n{"name":"a"}',
            501,
        ),
        (b"GET /health HTTP/9.9\r\nHost: feed\r\n\r\n", 505),
        (b"GET /health HTTP/1.1\r\n\r\n", 400),
        (b"GET /health HTTP/1.0\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost: feed\r\nX-Cut: a\x00b\r\n\r\n", 400),
        (b"FOO /participant HTTP/1.1\r\nHost: feed\r\n\r\n", 405),
        (b"TRACE /participant HTTP/1.1\r\nHost: feed\r\n\r\n", 405),
    ],
    ids=[
        "header-line",
        "all-headers",
        "url",
        "body-length",
        "body-chunked",
        "length-and-chunked",
        "gzip-framing",
        "http-9.9",
        "no-host-1.1",
        "no-host-1.0",
        "nul-in-header",
        "unknown-method",
        "trace",
    ],
)
def test_the_edge_answers_what_it_refuses_as_json(edge: Edge, raw: bytes, status: int) -> None:
    assert_json_error(send_raw(edge.proxy.port, raw), status)
    assert edge.proxy.request("GET", "/health").status == 200


def test_a_method_the_route_lacks_gets_the_apps_own_405(edge: Edge) -> None:
    response = edge.proxy.request("PUT", "/participant")

    assert_json_error(response, 405)
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize(
    "path",
    [
        "/participant",
        "/participant/1",
        "/participant/1/friends",
        "/participant/1/outbound?limit=5",
        "/participant/1/inbound",
        "/outbound?keywords=a",
        "/health",
        "/openapi.json",
    ],
)
def test_nginx_405s_allow_what_the_app_allows(edge: Edge, path: str) -> None:
    from_nginx = send_raw(edge.proxy.port, f"TRACE {path} HTTP/1.1\r\nHost: feed\r\n\r\n".encode())
    from_app = edge.proxy.request("PUT", path)

    assert (from_nginx.status, from_app.status) == (405, 405)
    assert from_nginx.headers["Allow"] == from_app.headers["Allow"]


def test_a_body_within_the_limit_reaches_the_app_chunked_or_not(edge: Edge) -> None:
    author = edge.proxy.request("POST", "/participant", {"name": "Chunked"}).json
    body = orjson.dumps({"subject": "s", "story": BIG_STORY})
    assert len(body) > MAX_BODY_BYTES * 0.9
    chunked = send_raw(
        edge.proxy.port,
        f"POST {author['link']}/outbound HTTP/1.1\r\nHost: feed\r\n".encode()
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
    )

    assert chunked.status == 200, chunked.body
    assert chunked.json["story"] == BIG_STORY


def logged(read_log: Callable[[], str], request_id: str) -> bool:
    """An access log records the id, once the line is written (after the response left)."""
    give_up = time.monotonic() + ANSWER_DEADLINE_SECONDS
    while time.monotonic() < give_up:
        if f'"request_id":"{request_id}"' in read_log().replace(" ", ""):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(
    ("offered", "kept"),
    [("client-chosen.id:42", True), (None, False), ("not safe<script>", False), ("a" * 129, False)],
)
def test_one_request_id_reaches_the_client_and_both_logs(
    edge: Edge, offered: str | None, kept: bool
) -> None:
    headers = {"X-Request-ID": offered} if offered is not None else {}
    response = edge.proxy.request("GET", "/health", headers=headers)

    request_id = response.headers.get_all("X-Request-ID")
    assert len(request_id) == 1
    if kept:
        assert request_id[0] == offered
    else:
        assert NGINX_REQUEST_ID.fullmatch(request_id[0])
    assert logged(edge.server.log, request_id[0])
    assert logged(edge.proxy.access_log.read_text, request_id[0])


def test_one_client_gets_at_most_its_share_of_requests_in_progress(edge: Edge) -> None:
    """One request more than the share, all held open: nginx admits them in the order it reads
    them, so whichever comes last is refused, and so is any further request while they last."""
    unfinished = (
        b"POST /participant HTTP/1.1\r\nHost: feed\r\nContent-Type: application/json\r\n"
        b'Content-Length: 20\r\n\r\n{"name":'
    )
    with contextlib.ExitStack() as stack:
        held = []
        for _ in range(CONNECTIONS_PER_CLIENT + 1):
            sock = stack.enter_context(
                socket.create_connection(("127.0.0.1", edge.proxy.port), ANSWER_DEADLINE_SECONDS)
            )
            sock.sendall(unfinished)
            held.append(sock)
        # A selector (epoll), not select(): this process may hold descriptors above 1024.
        watched = stack.enter_context(selectors.DefaultSelector())
        for sock in held:
            watched.register(sock, selectors.EVENT_READ)
        answered = watched.select(ANSWER_DEADLINE_SECONDS)
        assert answered, "no held request was refused"
        refused = http.client.HTTPResponse(answered[0][0].fileobj)
        refused.begin()
        assert_json_error(HttpResponse(refused.status, refused.headers, refused.read()), 429)
        assert_json_error(edge.proxy.request("GET", "/health"), 429)

    give_up = time.monotonic() + ANSWER_DEADLINE_SECONDS
    while edge.proxy.request("GET", "/health").status != 200:
        assert time.monotonic() < give_up, "the limit stayed after the requests ended"
        time.sleep(0.1)


def test_a_stopped_service_is_a_json_502(tmp_path: Path) -> None:
    with killed_at_exit(GunicornServer(tmp_path / "gunicorn.log")) as server:
        proxy = NginxProxy(tmp_path, f"127.0.0.1:{server.port}")
        try:
            proxy.start({})
            response = proxy.request("GET", "/participant/1")
        finally:
            proxy.stop()

    assert_json_error(response, 502)
    assert response.headers["Retry-After"] == "1"


@pytest.mark.parametrize("upstream", ["unix:/run/feedsvc.sock", "127.0.0.1:8081"])
def test_the_installed_config_passes_nginx_t(tmp_path: Path, upstream: str) -> None:
    config = Config.from_env({"FEED_BIND": "0.0.0.0:8080"})
    site = tmp_path / "feedsvc.conf"
    site.write_text(
        nginx.render(
            NGINX_TEMPLATE.read_text(),
            config,
            upstream=upstream,
            access_log=f"{tmp_path}/a.log",
            extra_dir=str(tmp_path / "extra"),
        )
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(main_config(tmp_path, site))

    checked = check_config(nginx_binary(), tmp_path, conf)

    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_tls_added_as_the_readme_says_terminates_in_front_of_the_app(
    tmp_path: Path, gunicorn_server: GunicornServer
) -> None:
    gunicorn_server.start({}, workers=2)
    gunicorn_server.wait_ready(workers=2)
    proxy = NginxProxy(tmp_path, f"127.0.0.1:{gunicorn_server.port}")
    certificate, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-subj", "/CN=feed.test", "-days", "1"),
            *("-keyout", str(key), "-out", str(certificate)),
        ],
        check=True,
        capture_output=True,
    )
    tls_port = free_port()
    proxy.extra_dir.mkdir(parents=True)
    (proxy.extra_dir / "tls.conf").write_text(
        f"listen 127.0.0.1:{tls_port} ssl;\n"
        f"ssl_certificate {certificate};\nssl_certificate_key {key};\n"
        "ssl_protocols TLSv1.2 TLSv1.3;\n"
    )
    context = ssl.create_default_context(cafile=certificate)
    context.check_hostname = False
    try:
        proxy.start({})
        connection = http.client.HTTPSConnection("127.0.0.1", tls_port, context=context, timeout=30)
        connection.request("GET", "/health", headers={"X-Request-ID": "over-tls"})
        response = connection.getresponse()
        body = response.read()
        connection.close()
    finally:
        proxy.stop()

    assert (response.status, orjson.loads(body)) == (200, {"status": "ok"})
    assert response.headers["X-Request-ID"] == "over-tls"


@pytest.mark.parametrize(
    ("bind", "upstream", "problem"),
    [
        ("fd://3", "127.0.0.1:8081", "FEED_BIND"),
        ("127.0.0.1:8080; include /etc/passwd", "127.0.0.1:8081", "FEED_BIND"),
        ("127.0.0.1:8080", "unix:/run/a b.sock", "upstream"),
    ],
)
def test_addresses_nginx_would_misread_are_refused(bind: str, upstream: str, problem: str) -> None:
    with pytest.raises(nginx.NginxConfigError, match=problem):
        nginx.render(
            NGINX_TEMPLATE.read_text(),
            Config.from_env({"FEED_BIND": bind}),
            upstream=upstream,
            access_log="off",
            extra_dir="/etc/feedsvc/nginx.d",
        )


def test_a_template_placeholder_without_a_value_is_refused() -> None:
    with pytest.raises(nginx.NginxConfigError, match="NEW_THING"):
        nginx.render(
            NGINX_TEMPLATE.read_text() + "# @NEW_THING@\n",
            Config.from_env({}),
            upstream="127.0.0.1:8081",
            access_log="off",
            extra_dir="/etc/feedsvc/nginx.d",
        )

"""The access log under real gunicorn: one JSON line per request, none for idle connections."""

import socket

import orjson
import pytest

from loadtest.harness.gunicorn import GunicornServer, request

REQUESTS = 20


def access_lines(server: GunicornServer) -> list[dict[str, object]]:
    """Every line of gunicorn's output but its error log records (those with a level), parsed as
    JSON (a line that is not fails the test), minus the readiness probes of start-up."""
    lines = [orjson.loads(line) for line in server.log().splitlines()]
    return [line for line in lines if "level" not in line and line["path"] != "/ready"]


@pytest.mark.parametrize("worker_class", ["meinheld", "gthread", "sync"])
def test_one_json_line_per_request_and_none_for_idle_connections(
    gunicorn_server: GunicornServer, worker_class: str
) -> None:
    gunicorn_server.start({"FEED_WORKER_CLASS": worker_class}, workers=2)
    gunicorn_server.wait_ready(workers=2)
    workers = set(gunicorn_server.worker_pids())

    for _ in range(5):  # connections that send nothing: meinheld used to log a junk line each
        socket.create_connection(("127.0.0.1", gunicorn_server.port)).close()
    ids = [f"trace-{number}" for number in range(REQUESTS)]
    for request_id in ids[:-1]:
        response = gunicorn_server.request("GET", "/health", headers={"X-Request-ID": request_id})
        assert response.headers["X-Request-ID"] == request_id
    weird_path = '/no/such/"path"\\'
    missing = request(gunicorn_server.port, "GET", weird_path, headers={"X-Request-ID": ids[-1]})
    assert missing.status == 404
    assert gunicorn_server.stop() == 0

    # Workers write their lines after answering, so two may land out of request order.
    lines = {line["request_id"]: line for line in access_lines(gunicorn_server)}
    assert len(access_lines(gunicorn_server)) == REQUESTS
    assert sorted(lines) == sorted(ids)
    assert {line["pid"] for line in lines.values()} <= workers
    assert [(lines[i]["method"], lines[i]["path"], lines[i]["status"]) for i in ids] == [
        *[("GET", "/health", 200)] * (REQUESTS - 1),
        ("GET", weird_path, 404),
    ]
    assert all(isinstance(line["duration_ms"], float) for line in lines.values())

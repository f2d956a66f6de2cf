"""Logs under real gunicorn: every line JSON, an app error carries its request's id, and
FEED_ACCESS_LOG keeps only what it promises."""

import sqlite3

import orjson
import pytest

from loadtest.harness.gunicorn import GunicornServer
from tests.support.processes import WORKER_APP
from tests.support.worker_app import SLEEP_PATH

SLOW_REQUEST_MS = 300
FAST_REQUESTS = 20


def log_records(server: GunicornServer) -> list[dict[str, object]]:
    """Every line gunicorn and the app wrote, each parsed as JSON (a line that is not fails)."""
    return [orjson.loads(line) for line in server.log().splitlines()]


def access_records(server: GunicornServer) -> list[dict[str, object]]:
    """The access lines (error log records have a level), minus start-up's readiness probes."""
    records = log_records(server)
    return [line for line in records if "level" not in line and line["path"] != "/ready"]


@pytest.mark.parametrize("worker_class", ["meinheld", "gthread"])
def test_an_error_logged_during_a_request_carries_its_request_id(
    gunicorn_server: GunicornServer, worker_class: str
) -> None:
    gunicorn_server.start({"FEED_WORKER_CLASS": worker_class}, workers=2)
    gunicorn_server.wait_ready(workers=2)
    assert gunicorn_server.request("POST", "/participant", {"name": "Ann"}).status == 200
    # A post whose time the service cannot read: reading it fails where nobody foresaw.
    with sqlite3.connect(gunicorn_server.data_dir / "feed.db") as db:
        db.execute(
            "INSERT INTO outbound (sender_id, occurred, subject, story)"
            " VALUES (1, 'soon', 's', 't')"
        )
    failed = gunicorn_server.request(
        "GET", "/participant/1/outbound", headers={"X-Request-ID": "trace-broken-row"}
    )
    assert failed.status == 500
    assert gunicorn_server.stop() == 0

    records = log_records(gunicorn_server)
    errors = [record for record in records if record.get("request_id") == "trace-broken-row"]
    error = next(record for record in errors if record.get("level") == "error")
    assert error["logger"] == "feedsvc.api.errors"
    assert error["message"] == "unexpected error on GET /participant/1/outbound"
    assert str(error["traceback"]).startswith("Traceback (most recent call last):")
    assert error["pid"] in {record["pid"] for record in errors if "status" in record}
    # gunicorn's own records are JSON too, outside any request.
    booting = [r for r in records if str(r.get("message", "")).startswith("Booting worker")]
    assert booting and all(record["request_id"] is None for record in booting)
    assert {record["logger"] for record in booting} == {"gunicorn.error"}


def test_errors_mode_logs_only_failed_and_slow_requests(gunicorn_server: GunicornServer) -> None:
    env = {"FEED_ACCESS_LOG": "errors", "FEED_SLOW_REQUEST_MS": str(SLOW_REQUEST_MS)}
    gunicorn_server.start(env, workers=2, app=WORKER_APP)
    gunicorn_server.wait_ready(workers=2)
    for _ in range(FAST_REQUESTS):
        assert gunicorn_server.request("GET", "/health").status == 200
    assert gunicorn_server.request("GET", "/participant/424242").status == 404
    assert gunicorn_server.request("GET", f"{SLEEP_PATH}?seconds=1.5").status == 200
    assert gunicorn_server.stop() == 0

    lines = access_records(gunicorn_server)
    assert {("GET", "/participant/424242", 404), ("GET", SLEEP_PATH, 200)} <= {
        (line["method"], line["path"], line["status"]) for line in lines
    }
    # A /health line may appear only if the contended machine made it slow.
    assert all(line["status"] >= 400 or line["duration_ms"] >= SLOW_REQUEST_MS for line in lines), (
        lines
    )


def test_off_mode_logs_no_request_but_still_the_errors(gunicorn_server: GunicornServer) -> None:
    gunicorn_server.start({"FEED_ACCESS_LOG": "off"}, workers=2)
    gunicorn_server.wait_ready(workers=2)
    assert gunicorn_server.request("GET", "/participant/424242").status == 404
    assert gunicorn_server.stop() == 0

    records = log_records(gunicorn_server)
    assert all("level" in record for record in records)
    assert any(record["message"] == "Shutting down: Master" for record in records)

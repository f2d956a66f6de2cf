"""A full disk under the SQLite data and the metrics files: 503s, no dead process, recovery."""

import http.client
import time

import pytest

from loadtest.harness.gunicorn import GunicornServer

ROUTES = (
    "/participant",
    "/participant/1",
    "/participant/1/friends",
    "/participant/1/outbound",
    "/participant/1/inbound",
    "/outbound?keywords=story",
    "/ready",
    "/health",
    "/openapi.json",
)
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
STORY = "a story long enough to fill the write-ahead log " * 200
POSTS_UNTIL_FULL = 400
# Only there so that a service that never recovers fails the test instead of hanging it.
RECOVERY_DEADLINE_S = 30.0


def post_story(server: GunicornServer, number: int):
    return server.request(
        "POST", "/participant/1/outbound", {"subject": f"post {number}", "story": STORY}
    )


def assert_full_disk_answer(response) -> None:
    """What a write on a full disk gets: a clear, retryable refusal, never a 500."""
    assert response.status in (503, 507), response.body
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json["title"]


@pytest.mark.parametrize("worker_class", ["meinheld", "gthread"])
@pytest.mark.parametrize("recovery", ["freed", "grown"])
def test_a_full_disk_answers_503_kills_nothing_and_recovers_when_space_returns(
    gunicorn_server, small_disk, worker_class, recovery
):
    gunicorn_server.start(
        {
            "FEED_WORKER_CLASS": worker_class,
            "FEED_DATA_DIR": str(small_disk.path / "data"),
            "FEED_METRICS_DIR": str(small_disk.path / "metrics"),
        },
        workers=2,
    )
    gunicorn_server.wait_ready(workers=2)
    for name in ("Ada", "Bob"):
        assert gunicorn_server.request("POST", "/participant", {"name": name}).status == 200
    befriended = gunicorn_server.request("POST", "/participant/1/friends", {"to": 2})
    assert befriended.status == 200
    workers = gunicorn_server.worker_pids()

    small_disk.fill()
    refused = None
    for number in range(POSTS_UNTIL_FULL):
        response = post_story(gunicorn_server, number)
        if response.status != 200:
            refused = response
            break
    assert refused is not None, "every post fitted on the full disk"
    assert_full_disk_answer(refused)
    # Every route and method once: new metric series, whose files cannot grow any more.
    for route in ROUTES:
        for method in METHODS:
            try:
                response = gunicorn_server.request(method, route)
            except (OSError, http.client.HTTPException) as error:
                pytest.fail(f"{method} {route} on a full disk: {error!r}\n{gunicorn_server.log()}")
            assert response.status < 500 or response.status in (503, 507), (method, route)
    assert_full_disk_answer(post_story(gunicorn_server, -1))
    assert gunicorn_server.worker_pids() == workers, gunicorn_server.log()[-3000:]

    if recovery == "freed":
        small_disk.free()
    else:
        small_disk.grow("64m")
    give_up = time.monotonic() + RECOVERY_DEADLINE_S
    while (response := post_story(gunicorn_server, -2)).status != 200:
        assert time.monotonic() < give_up, response.body
        time.sleep(0.2)
    assert gunicorn_server.request("GET", "/participant/2/inbound").status == 200
    assert gunicorn_server.worker_pids() == workers
    metrics = gunicorn_server.request("GET", "/metrics")
    assert metrics.status == 200
    assert b"feed_http_request_duration_seconds" in metrics.body
    assert gunicorn_server.stop() == 0

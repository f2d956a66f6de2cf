"""/metrics under real gunicorn: any worker's scrape reports the totals of all workers."""

import concurrent.futures
import signal
import time

import pytest

from loadtest.harness.gunicorn import START_DEADLINE_SECONDS, GunicornServer
from tests.support.processes import WORKER_APP
from tests.support.prometheus import sample
from tests.support.worker_app import WORKER_PID_HEADER

WORKERS = 3
NEW_PARTICIPANTS = 30
BATCH = 60
MAX_REQUESTS = 6000
SCRAPES = 12


def scrape(server: GunicornServer) -> tuple[str, str]:
    """One /metrics exposition and the pid of the worker that produced it."""
    response = server.request("GET", "/metrics")
    assert response.status == 200
    return response.body.decode(), response.headers[WORKER_PID_HEADER]


def requests_total(metrics_text: str, route: str, method: str) -> float:
    return sample(
        metrics_text,
        "feed_http_request_duration_seconds_count",
        route=route,
        method=method,
        status="200",
    )


@pytest.mark.parametrize("worker_class", ["meinheld", "gthread"])
def test_totals_equal_the_requests_made_across_all_workers(
    gunicorn_server: GunicornServer, worker_class: str
) -> None:
    gunicorn_server.start({"FEED_WORKER_CLASS": worker_class}, workers=WORKERS, app=WORKER_APP)
    gunicorn_server.wait_ready(workers=WORKERS)

    def call(number: int) -> str:
        if number < NEW_PARTICIPANTS:
            response = gunicorn_server.request("POST", "/participant", {"name": f"p{number}"})
        else:
            response = gunicorn_server.request("GET", "/health")
        assert response.status == 200
        return response.headers[WORKER_PID_HEADER]

    # Batches until several workers have counted some: then only a sum across workers can
    # show every request. (One fast worker may take a whole batch; the next ones spread.)
    served_by: set[str] = set()
    made = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as clients:
        while len(served_by) < 2 and made < MAX_REQUESTS:
            served_by |= set(clients.map(call, range(made, made + BATCH)))
            made += BATCH
    assert len(served_by) > 1, "one worker served every request"

    for text, _ in (scrape(gunicorn_server) for _ in range(SCRAPES)):
        assert requests_total(text, "/health", "GET") == made - NEW_PARTICIPANTS
        assert requests_total(text, "/participant", "POST") == NEW_PARTICIPANTS

    # A dead worker's counts stay in the totals, and its exit is counted.
    victim = gunicorn_server.worker_pids()[0]
    gunicorn_server.signal_worker(victim, signal.SIGKILL)
    give_up = time.monotonic() + START_DEADLINE_SECONDS
    while victim in gunicorn_server.worker_pids() and time.monotonic() < give_up:
        time.sleep(0.05)  # the master has not reaped it yet
    gunicorn_server.wait_ready(workers=WORKERS)
    text, _ = scrape(gunicorn_server)
    assert requests_total(text, "/health", "GET") == made - NEW_PARTICIPANTS
    assert sample(text, "feed_worker_exits_total") == 1
    assert gunicorn_server.stop() == 0

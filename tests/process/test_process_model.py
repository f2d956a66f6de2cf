"""The process model under real gunicorn: signals, dead and hung workers; meinheld and gthread."""

import concurrent.futures
import http.client
import signal
import time
from pathlib import Path

import pytest

from loadtest.harness.gunicorn import START_DEADLINE_SECONDS, GunicornServer
from tests.support.processes import WORKER_APP, ClientLoop
from tests.support.worker_app import SLEEP_PATH, SLEEPING_MARK, WORKER_PID_HEADER

WORKER_CLASSES = ["meinheld", "gthread"]
POST_BATCH = 100
MAX_POSTS = 1000  # one timeline page holds them all


def wait_until(condition, what: str, server: GunicornServer) -> None:
    """Poll `condition` until true; fail naming `what`, with gunicorn's log, past the deadline."""
    give_up = time.monotonic() + START_DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"{what} did not happen:\n{server.log()}")
        time.sleep(0.1)


def start(server: GunicornServer, worker_class: str, workers: int, **env: str) -> None:
    server.start({"FEED_WORKER_CLASS": worker_class, **env}, workers=workers, app=WORKER_APP)
    server.wait_ready(workers=workers)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_concurrent_writes_succeed_and_every_worker_serves(gunicorn_server, worker_class):
    start(gunicorn_server, worker_class, workers=3)
    ada = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json

    def post(number: int) -> tuple[int, str]:
        story = {"subject": "s", "story": f"post {number}"}
        response = gunicorn_server.request("POST", f"{ada['link']}/outbound", story)
        return response.status, response.headers[WORKER_PID_HEADER]

    # Batches until every worker took some: a busy gthread worker may take a whole batch.
    workers = set(gunicorn_server.worker_pids())
    results: list[tuple[int, str]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as clients:
        while {int(pid) for _, pid in results} != workers and len(results) < MAX_POSTS:
            results += clients.map(post, range(len(results), len(results) + POST_BATCH))

    assert [status for status, _ in results] == [200] * len(results)
    assert {int(pid) for _, pid in results} == workers
    timeline = gunicorn_server.request("GET", f"{ada['link']}/outbound?limit=1000").json
    assert sorted(item["story"] for item in timeline) == sorted(
        f"post {n}" for n in range(len(results))
    )
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_hup_reloads_workers_without_failing_a_request(gunicorn_server, worker_class):
    start(gunicorn_server, worker_class, workers=2)
    old_workers = set(gunicorn_server.worker_pids())

    with ClientLoop(gunicorn_server.port) as clients:
        clients.wait_for_successes(50)
        gunicorn_server.signal(signal.SIGHUP)
        wait_until(
            lambda: (
                set(gunicorn_server.worker_pids()).isdisjoint(old_workers)
                and len(gunicorn_server.worker_pids()) == 2
            ),
            "replacing every worker on HUP",
            gunicorn_server,
        )
        clients.wait_for_successes(50)
        # Which worker accepts a new connection is the kernel's choice: keep asking until each
        # new worker has answered at least once.
        new_workers = {str(pid) for pid in gunicorn_server.worker_pids()}
        wait_until(
            lambda: new_workers <= clients.served_by, "every new worker serving", gunicorn_server
        )

    assert clients.failures == []
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_term_lets_requests_in_flight_finish_then_exits_0(gunicorn_server, worker_class):
    start(gunicorn_server, worker_class, workers=2)

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as clients:
        slow = [
            clients.submit(gunicorn_server.request, "GET", f"{SLEEP_PATH}?seconds=2")
            for _ in range(2)
        ]
        wait_until(
            lambda: len(sleeping(gunicorn_server)) == 2,
            "both slow requests reaching the app",
            gunicorn_server,
        )
        assert not any(future.done() for future in slow)
        gunicorn_server.signal(signal.SIGTERM)
        statuses = [future.result().status for future in slow]

    assert statuses == [200, 200]
    assert gunicorn_server.stop() == 0, gunicorn_server.log()


def sleeping(server: GunicornServer) -> list[Path]:
    """The marks the slow route leaves as each request enters the app."""
    return list(server.data_dir.glob(f"{SLEEPING_MARK}*"))


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_killed_worker_is_replaced_and_only_its_requests_fail(gunicorn_server, worker_class):
    start(gunicorn_server, worker_class, workers=2)
    victim, survivor = gunicorn_server.worker_pids()

    with ClientLoop(gunicorn_server.port, clients=4) as clients:
        clients.wait_for_successes(50)
        gunicorn_server.signal_worker(victim, signal.SIGKILL)
        wait_until(
            lambda: (
                len(gunicorn_server.worker_pids()) == 2
                and victim not in gunicorn_server.worker_pids()
            ),
            "replacing the killed worker",
            gunicorn_server,
        )
        clients.wait_for_successes(50)

    # Each client has one request in flight at a time: at most those can have hit the victim.
    assert len(clients.failures) <= 4, clients.failures
    assert survivor in gunicorn_server.worker_pids()
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_request_hung_past_timeout_gets_its_worker_replaced(gunicorn_server, worker_class):
    start(gunicorn_server, worker_class, workers=2, FEED_TIMEOUT="3")
    before = set(gunicorn_server.worker_pids())
    # Longer than the timeout while idle: a worker that is not stuck must not be killed.
    time.sleep(5)
    assert set(gunicorn_server.worker_pids()) == before

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as client:
        hung = client.submit(gunicorn_server.request, "GET", f"{SLEEP_PATH}?seconds=3600")
        wait_until(
            lambda: (
                "WORKER TIMEOUT" in gunicorn_server.log()
                and len(set(gunicorn_server.worker_pids()) - before) == 1
                and len(gunicorn_server.worker_pids()) == 2
            ),
            "killing and replacing the hung worker",
            gunicorn_server,
        )
        try:
            outcome = hung.result().status
        except (OSError, http.client.HTTPException) as error:
            outcome = repr(error)
    # Cut off with its worker: an error status, or the connection closed.
    assert outcome != 200

    # The idle worker kept beating its heartbeat all along: only the hung one was replaced.
    assert len(before & set(gunicorn_server.worker_pids())) == 1
    assert gunicorn_server.log().count("WORKER TIMEOUT") == 1
    assert gunicorn_server.request("GET", "/openapi.json").status == 200
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_ttin_and_ttou_change_the_worker_count_live(gunicorn_server, worker_class):
    start(gunicorn_server, worker_class, workers=2)

    gunicorn_server.signal(signal.SIGTTIN)
    wait_until(lambda: len(gunicorn_server.worker_pids()) == 3, "a third worker", gunicorn_server)
    # One signal at a time: two of a kind sent together may reach the master as one.
    gunicorn_server.signal(signal.SIGTTOU)
    wait_until(lambda: len(gunicorn_server.worker_pids()) == 2, "down to two", gunicorn_server)
    gunicorn_server.signal(signal.SIGTTOU)
    wait_until(lambda: len(gunicorn_server.worker_pids()) == 1, "down to one", gunicorn_server)

    assert gunicorn_server.request("GET", "/openapi.json").status == 200
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_max_requests_recycles_workers_without_failing_a_request(gunicorn_server, worker_class):
    start(
        gunicorn_server,
        worker_class,
        workers=1,
        FEED_MAX_REQUESTS="20",
        FEED_MAX_REQUESTS_JITTER="0",
    )
    first = gunicorn_server.worker_pids()

    served_by = set()
    for _ in range(70):
        response = gunicorn_server.request("GET", "/health")
        assert response.status == 200
        served_by.add(response.headers[WORKER_PID_HEADER])

    # 70 requests at 20 a worker: the first worker and at least two successors served them.
    assert len(served_by) >= 3
    assert str(first[0]) in served_by
    assert gunicorn_server.stop() == 0

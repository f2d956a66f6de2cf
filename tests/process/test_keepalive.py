"""Reused keep-alive connections across reloads, recycling and stalls: no request may fail.

The clients reuse their connections and never resend (ClientLoop with reuse_connections): every
request sent that got no complete 200 is a failure.
"""

import contextlib
import functools
import http.client
import signal
import time

import pytest

from loadtest.harness.gunicorn import START_DEADLINE_SECONDS, GunicornServer
from tests.support.processes import WORKER_APP, ClientLoop
from tests.support.worker_app import SLEEP_PATH

WORKER_CLASSES = ["meinheld", "gthread"]
KeepAliveClients = functools.partial(ClientLoop, clients=6, reuse_connections=True)


def start(server: GunicornServer, worker_class: str, workers: int, **env: str) -> None:
    server.start({"FEED_WORKER_CLASS": worker_class, **env}, workers=workers, app=WORKER_APP)
    server.wait_ready(workers=workers)


def wait_for(condition, what: str) -> None:
    give_up = time.monotonic() + START_DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < give_up, f"{what} did not happen"
        time.sleep(0.1)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_hup_fails_no_request_on_reused_connections(gunicorn_server, worker_class):
    start(gunicorn_server, worker_class, workers=2)
    with KeepAliveClients(gunicorn_server.port) as clients:
        for _ in range(3):
            old_workers = set(gunicorn_server.worker_pids())
            clients.wait_for_successes(100)
            gunicorn_server.signal(signal.SIGHUP)
            wait_for(
                lambda old=old_workers: (
                    set(gunicorn_server.worker_pids()).isdisjoint(old)
                    and len(gunicorn_server.worker_pids()) == 2
                ),
                "replacing every worker",
            )
        clients.wait_for_successes(100)
    assert clients.failures == []
    assert clients.reused > clients.successes / 2
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_ttou_fails_no_request_on_reused_connections(gunicorn_server, worker_class):
    start(gunicorn_server, worker_class, workers=3)
    with KeepAliveClients(gunicorn_server.port) as clients:
        for remaining in (2, 1):
            clients.wait_for_successes(100)
            gunicorn_server.signal(signal.SIGTTOU)
            wait_for(lambda n=remaining: len(gunicorn_server.worker_pids()) == n, "a worker less")
        clients.wait_for_successes(100)
    assert clients.failures == []
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_recycling_fails_no_request_on_reused_connections(gunicorn_server, worker_class):
    recycling = {"FEED_MAX_REQUESTS": "150", "FEED_MAX_REQUESTS_JITTER": "0"}
    start(gunicorn_server, worker_class, workers=1, **recycling)
    with KeepAliveClients(gunicorn_server.port) as clients:
        for _ in range(3):
            (worker,) = gunicorn_server.worker_pids()
            wait_for(lambda w=worker: gunicorn_server.worker_pids() not in ([], [w]), "recycling")
        clients.wait_for_successes(100)
    assert clients.failures == []
    assert gunicorn_server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_request_stalled_past_keepalive_resets_no_other_connection(gunicorn_server, worker_class):
    start(gunicorn_server, worker_class, workers=1, FEED_KEEPALIVE="1")
    with KeepAliveClients(gunicorn_server.port) as clients:
        clients.wait_for_successes(100)
        for _ in range(2):
            stalled = gunicorn_server.request("GET", f"{SLEEP_PATH}?seconds=3")
            assert stalled.status == 200
            clients.wait_for_successes(100)
    assert clients.failures == []
    assert gunicorn_server.stop() == 0


def keep_alive_get(connection: http.client.HTTPConnection) -> http.client.HTTPResponse:
    """GET /health on a connection kept open between requests; the response read to its end."""
    connection.request("GET", "/health")
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    return response


def test_a_repeated_stop_still_serves_the_kept_alive_connections(gunicorn_server):
    """gunicorn repeats SIGTERM to a worker it retires (TTOU, HUP): a repeat once took meinheld's
    listener off its count of live connections again, so it left with one still open and reset
    the request a client had just sent on it."""
    start(gunicorn_server, "meinheld", workers=1)
    (worker,) = gunicorn_server.worker_pids()
    with contextlib.ExitStack() as stack:
        first, second, third = (
            stack.enter_context(
                contextlib.closing(
                    http.client.HTTPConnection("127.0.0.1", gunicorn_server.port, timeout=60)
                )
            )
            for _ in range(3)
        )
        for connection in (first, second, third):
            assert not keep_alive_get(connection).will_close
        gunicorn_server.signal_worker(worker, signal.SIGTERM)
        # Its answer closing the connection shows the stop has begun; the repeat is not merged.
        assert keep_alive_get(first).will_close
        gunicorn_server.signal_worker(worker, signal.SIGTERM)

        assert keep_alive_get(second).will_close
        assert keep_alive_get(third).will_close
    assert gunicorn_server.stop() == 0

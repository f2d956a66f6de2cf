"""The perf publisher in the process model: a real gunicorn with several workers and a real broker.

Starts with the service, publishes one record per API request, is restarted when it dies,
replaced on HUP and stopped on TERM without losing a record or a count, and stays out of
systemd's notification protocol.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.consumer.fetcher import ConsumerRecord
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

from loadtest.harness.gunicorn import GunicornServer
from tests.support.kafka import TansuBroker
from tests.support.prometheus import sample

WORKERS = 2
DROP_REASONS = ("channel_full", "channel_closed", "backlog", "send_failed", "publisher_exit")
DEADLINE_SECONDS = 60.0
# FEED_GRACEFUL_TIMEOUT for the stop tests, and what the publisher may add after it.
GRACEFUL_TIMEOUT_SECONDS = 10
PUBLISHER_STOP_SECONDS = 7.0


def start(server: GunicornServer, broker: TansuBroker, topic: str, **extra: str) -> None:
    server.start(
        {
            # Where the tests read the files the service left (the default is on tmpfs).
            "FEED_METRICS_DIR": str(metrics_dir_of(server)),
            "FEED_KAFKA_BOOTSTRAP": broker.bootstrap,
            "FEED_KAFKA_PERF_TOPIC": topic,
            "FEED_KAFKA_EVENTS_TOPIC": f"{topic}.events",
            "FEED_GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT_SECONDS),
            **extra,
        },
        workers=WORKERS,
    )
    server.wait_ready(workers=WORKERS)
    wait_for(lambda: len(server.publisher_pids()) == 1, "a perf publisher beside the workers")


def metrics_dir_of(server: GunicornServer) -> Path:
    return server.data_dir / "metrics"


def wait_for(condition, what: str, deadline: float = DEADLINE_SECONDS) -> None:
    give_up = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"still waiting for {what} after {deadline} s")
        time.sleep(0.1)


def wait_for_successor(server: GunicornServer, killed: int) -> None:
    wait_for(lambda: server.publisher_pids() not in ([], [killed]), "a restarted publisher")


class Api:
    """API requests of known kinds against one server, tallied by (entity, operation)."""

    def __init__(self, server: GunicornServer) -> None:
        self._server = server
        self.made: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._sender = self._call("POST", "/participant", ("participant", "post"), {"name": "Ada"})

    @property
    def total(self) -> int:
        return sum(self.made.values())

    def batch(self, size: int) -> None:
        for n in range(size):
            if n % 5 == 0:
                body = {"subject": f"post {n}", "story": "hello kafka"}
                self._call("POST", f"{self._sender}/outbound", ("outbound", "post"), body)
            elif n % 5 == 1:
                self._call("GET", f"{self._sender}/inbound", ("inbound", "get"))
            else:
                self._call("GET", self._sender, ("participant", "get"))

    def _call(
        self, method: str, path: str, kind: tuple[str, str], body: object = None
    ) -> str | None:
        response = self._server.request(method, path, body)
        assert response.status == 200, response.body
        with self._lock:
            self.made[kind] += 1
        return response.json.get("link") if isinstance(response.json, dict) else None


def metrics(server: GunicornServer) -> str:
    response = server.request("GET", "/metrics")
    assert response.status == 200
    return response.body.decode()


def metrics_left_in(metrics_dir: Path) -> str:
    """The totals the multiprocess files hold after the service exited."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(metrics_dir))
    return generate_latest(registry).decode()


def perf_counts(text: str) -> tuple[float, dict[str, float], float]:
    """Published, dropped by reason, and queued, from an exposition."""
    dropped = {
        reason: sample(text, "feed_perf_records_dropped_total", reason=reason)
        for reason in DROP_REASONS
    }
    published = sample(text, "feed_perf_records_published_total")
    return published, dropped, sample(text, "feed_perf_records_queued")


def published_all(server: GunicornServer, expected: int) -> bool:
    published, dropped, queued = perf_counts(metrics(server))
    assert sum(dropped.values()) == 0, dropped
    return published == expected and queued == 0


def every_request_published(
    server: GunicornServer, broker: TansuBroker, topic: str, api: Api
) -> list[ConsumerRecord]:
    """The topic holds one record per request made, and /metrics counts each as published."""
    records = broker.read_topic(topic, at_least=api.total)
    assert len(records) == api.total
    wait_for(lambda: published_all(server, api.total), "published == requests")
    return records


@pytest.fixture
def perf_topic(running_kafka: TansuBroker) -> str:
    return running_kafka.create_topic("perf", partitions=3)


def test_every_request_is_one_record_published_and_in_the_report(
    running_kafka: TansuBroker, gunicorn_server: GunicornServer, perf_topic: str
) -> None:
    start(gunicorn_server, running_kafka, perf_topic)
    api = Api(gunicorn_server)
    api.batch(60)

    records = every_request_published(gunicorn_server, running_kafka, perf_topic, api)
    workers = {str(pid).encode() for pid in gunicorn_server.worker_pids()}
    assert {dict(record.headers)["pid"] for record in records} <= workers

    report = subprocess.run(
        [
            str(Path(sys.executable).parent / "feedsvc"),
            "perf-report",
            "--bootstrap",
            running_kafka.bootstrap,
            "--topic",
            perf_topic,
            "--from-beginning",
        ],
        env={k: v for k, v in os.environ.items() if not k.startswith("FEED_")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    _header, *rows, summary = report.stdout.splitlines()
    reported: Counter[tuple[str, str]] = Counter()
    for row in rows:  # minute (2 cells), entity, operation, requests, ...
        reported[(row.split()[2], row.split()[3])] += int(row.split()[4])
    assert reported == api.made
    assert summary == f"{api.total} perf records from {perf_topic}"
    assert gunicorn_server.stop() == 0


def test_broker_down_requests_are_served_and_every_record_is_counted_as_dropped(
    running_kafka: TansuBroker, gunicorn_server: GunicornServer, perf_topic: str
) -> None:
    running_kafka.stop()
    start(gunicorn_server, running_kafka, perf_topic)
    api = Api(gunicorn_server)
    api.batch(40)

    def all_held_or_dropped() -> bool:
        published, dropped, queued = perf_counts(metrics(gunicorn_server))
        assert published == 0
        return sum(dropped.values()) + queued == api.total

    wait_for(all_held_or_dropped, "every record held by the publisher or dropped")
    publisher = gunicorn_server.publisher_pids()[0]
    started = time.monotonic()
    assert gunicorn_server.stop(GRACEFUL_TIMEOUT_SECONDS + PUBLISHER_STOP_SECONDS) == 0
    assert time.monotonic() - started < GRACEFUL_TIMEOUT_SECONDS + PUBLISHER_STOP_SECONDS
    assert not Path(f"/proc/{publisher}").exists()
    # What the publisher held when it stopped is counted too: nothing is unaccounted for.
    published, dropped, queued = perf_counts(metrics_left_in(metrics_dir_of(gunicorn_server)))
    assert (published, queued) == (0, 0)
    assert sum(dropped.values()) == api.total, dropped


def test_a_killed_publisher_is_restarted_and_the_records_meanwhile_are_published(
    running_kafka: TansuBroker, gunicorn_server: GunicornServer, perf_topic: str
) -> None:
    start(gunicorn_server, running_kafka, perf_topic)
    api = Api(gunicorn_server)
    api.batch(20)
    wait_for(lambda: published_all(gunicorn_server, api.total), "the first records published")
    [killed] = gunicorn_server.publisher_pids()

    os.kill(killed, signal.SIGKILL)
    # Served while no publisher runs: the records wait in the channel for the next one.
    api.batch(20)
    wait_for_successor(gunicorn_server, killed)
    api.batch(20)

    every_request_published(gunicorn_server, running_kafka, perf_topic, api)
    assert gunicorn_server.stop() == 0


def test_a_publisher_killed_holding_records_is_counted_and_the_master_writes_no_metrics(
    running_kafka: TansuBroker, gunicorn_server: GunicornServer, perf_topic: str
) -> None:
    start(gunicorn_server, running_kafka, perf_topic)
    api = Api(gunicorn_server)
    api.batch(10)
    wait_for(lambda: published_all(gunicorn_server, api.total), "the first records published")
    # The broker known and gone: the publisher holds what it reads, waiting for acknowledgements.
    running_kafka.stop()
    api.batch(20)
    wait_for(lambda: perf_counts(metrics(gunicorn_server))[2] > 0, "records held by the publisher")
    [killed] = gunicorn_server.publisher_pids()

    os.kill(killed, signal.SIGKILL)
    wait_for_successor(gunicorn_server, killed)
    api.batch(10)

    def all_published_or_dropped() -> bool:
        published, dropped, queued = perf_counts(metrics(gunicorn_server))
        return queued == 0 and published + sum(dropped.values()) == api.total

    wait_for(all_published_or_dropped, "published + dropped == requests")
    assert perf_counts(metrics(gunicorn_server))[1]["publisher_exit"] > 0
    # A full metrics filesystem must never kill the master: it maps no metrics file of its own.
    assert sorted(metrics_dir_of(gunicorn_server).glob(f"*_{gunicorn_server.pid}.db")) == []
    assert gunicorn_server.stop() == 0


def test_hup_replaces_the_publisher_without_losing_a_record(
    running_kafka: TansuBroker, gunicorn_server: GunicornServer, perf_topic: str
) -> None:
    start(gunicorn_server, running_kafka, perf_topic)
    api = Api(gunicorn_server)
    [old] = gunicorn_server.publisher_pids()
    stopping = threading.Event()

    def load() -> None:
        while not stopping.is_set():
            api.batch(5)

    client = threading.Thread(target=load)
    client.start()
    try:
        wait_for(lambda: api.total > 50, "requests before the reload")
        gunicorn_server.signal(signal.SIGHUP)
        wait_for(lambda: old not in gunicorn_server.publisher_pids(), "the old publisher gone")
        wait_for(lambda: len(gunicorn_server.publisher_pids()) == 1, "one new publisher")
        made = api.total
        wait_for(lambda: api.total > made + 50, "requests after the reload")
    finally:
        stopping.set()
        client.join()

    every_request_published(gunicorn_server, running_kafka, perf_topic, api)
    assert gunicorn_server.stop() == 0


def test_term_publishes_what_the_workers_left_and_stops_the_publisher(
    running_kafka: TansuBroker, gunicorn_server: GunicornServer, perf_topic: str
) -> None:
    start(gunicorn_server, running_kafka, perf_topic)
    publisher = gunicorn_server.publisher_pids()[0]
    api = Api(gunicorn_server)
    api.batch(40)

    assert gunicorn_server.stop(GRACEFUL_TIMEOUT_SECONDS + PUBLISHER_STOP_SECONDS) == 0
    assert not Path(f"/proc/{publisher}").exists()
    assert len(running_kafka.read_topic(perf_topic, at_least=api.total)) == api.total
    published, dropped, _queued = perf_counts(metrics_left_in(metrics_dir_of(gunicorn_server)))
    assert published == api.total
    assert sum(dropped.values()) == 0


def test_perf_records_off_runs_no_publisher_and_publishes_none(
    running_kafka: TansuBroker, gunicorn_server: GunicornServer, perf_topic: str
) -> None:
    gunicorn_server.start(
        {
            "FEED_KAFKA_BOOTSTRAP": running_kafka.bootstrap,
            "FEED_KAFKA_PERF_TOPIC": perf_topic,
            "FEED_KAFKA_PERF_RECORDS": "false",
        },
        workers=WORKERS,
    )
    gunicorn_server.wait_ready(workers=WORKERS)
    Api(gunicorn_server).batch(10)
    assert gunicorn_server.publisher_pids() == []
    assert running_kafka.read_topic(perf_topic) == []
    assert gunicorn_server.stop() == 0


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A systemd-style notification socket that records the sender of each message."""
    path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    listener.settimeout(DEADLINE_SECONDS)
    try:
        yield listener, path
    finally:
        listener.close()


def test_under_notify_only_the_master_speaks_to_systemd(
    running_kafka: TansuBroker,
    gunicorn_server: GunicornServer,
    perf_topic: str,
    notify_socket: tuple[socket.socket, str],
) -> None:
    listener, path = notify_socket
    start(gunicorn_server, running_kafka, perf_topic, NOTIFY_SOCKET=path)
    message, ancillary, _flags, _address = listener.recvmsg(4096, socket.CMSG_SPACE(12))
    assert b"READY=1" in message
    [(_level, _type, credentials)] = ancillary
    sender_pid = int.from_bytes(credentials[:4], sys.byteorder)
    assert sender_pid == gunicorn_server.pid
    # NotifyAccess=main: the publisher (a child in the same cgroup) is not handed the socket.
    [publisher] = gunicorn_server.publisher_pids()
    environ = Path(f"/proc/{publisher}/environ").read_bytes().split(b"\0")
    assert not [entry for entry in environ if entry.startswith(b"NOTIFY_SOCKET=")]
    assert gunicorn_server.stop() == 0

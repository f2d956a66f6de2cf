"""Perf records through a real broker: exact format, and requests unaffected while it is down."""

import os
import re
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
from prometheus_client import REGISTRY

from feedsvc import database
from feedsvc.app import create_app
from feedsvc.config import Config
from feedsvc.feed import Feed
from feedsvc.kafka.perf_publisher import QUEUE_SIZE, PerfPublisher
from feedsvc.kafka.request_timing import RequestTiming
from feedsvc.outbox import OutboxRelay
from feedsvc.search import create_search
from feedsvc.store import Store
from tests.support.api import IndexedTestClient
from tests.support.kafka import TansuBroker

PERF_LINE = re.compile(rb"\d{4}\|\d{2}\|\d{2}\|\d{2}\|\d{2}\|[a-z]+\|[a-z]+\|\d+")


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("feed_perf_records_dropped_total", {"reason": reason}) or 0.0


@pytest.fixture
def perf_topic(running_kafka: TansuBroker) -> str:
    return running_kafka.create_topic("perf")


@pytest.fixture
def feed_config(tmp_path: Path) -> Config:
    config = Config.from_env({"FEED_DATA_DIR": str(tmp_path)})
    database.init_db(config)
    return config


def timed_client(config: Config, publisher: PerfPublisher) -> Iterator[falcon.testing.TestClient]:
    engine = database.create_engine(config)
    search = create_search(config, engine)
    feed = Feed(Store(engine), search)
    relay = OutboxRelay(engine, search.outbox_sinks)
    relay.start()
    publisher.start()
    try:
        yield IndexedTestClient(create_app(config, feed, [RequestTiming(publisher)]), config)
    finally:
        publisher.stop()
        relay.stop()
        engine.dispose()


def exercise_api(client: falcon.testing.TestClient) -> list[tuple[bytes, bytes]]:
    """One request of every kind, each answered as usual; the (entity, operation) of each."""
    ada = client.simulate_post("/participant", json={"name": "Ada"})
    bob = client.simulate_post("/participant", json={"name": "Bob"})
    assert ada.status_code == bob.status_code == 200
    ada_link, bob_link = ada.json["link"], bob.json["link"]
    results = [
        client.simulate_get(ada_link),
        client.simulate_post(f"{ada_link}/friends", json={"to": bob_link}),
        client.simulate_get(f"{ada_link}/friends"),
        client.simulate_post(f"{ada_link}/outbound", json={"subject": "s", "story": "hello"}),
        client.simulate_get(f"{ada_link}/outbound"),
        client.simulate_get(f"{bob_link}/inbound"),
        client.simulate_get("/outbound", params={"keywords": "hello"}),
    ]
    assert [result.status_code for result in results] == [200] * len(results)
    assert client.simulate_get("/outbound", params={"keywords": "hello"}).json == [ada_link]
    return [
        (b"participant", b"post"),
        (b"participant", b"post"),
        (b"participant", b"get"),
        (b"friends", b"post"),
        (b"friends", b"get"),
        (b"outbound", b"post"),
        (b"outbound", b"get"),
        (b"inbound", b"get"),
        (b"outbound", b"search"),
        (b"outbound", b"search"),
    ]


def test_one_record_per_request_in_the_exact_format(
    running_kafka: TansuBroker, perf_topic: str, feed_config: Config
) -> None:
    publisher = PerfPublisher([running_kafka.bootstrap], perf_topic)
    for client in timed_client(feed_config, publisher):
        expected = exercise_api(client)

    records = running_kafka.read_topic(perf_topic, at_least=len(expected))
    assert [tuple(r.value.split(b"|")[5:7]) for r in records] == expected
    for record in records:
        assert PERF_LINE.fullmatch(record.value), record.value
        assert record.key is None
        assert dict(record.headers)["pid"] == str(os.getpid()).encode()


def test_broker_down_requests_are_unaffected_and_records_dropped(
    running_kafka: TansuBroker, perf_topic: str, feed_config: Config
) -> None:
    publisher = PerfPublisher([running_kafka.bootstrap], perf_topic)
    failed_before = dropped("send_failed")
    running_kafka.stop()
    try:
        for client in timed_client(feed_config, publisher):
            exercise_api(client)
    finally:
        running_kafka.start()
    # The publisher stopped without waiting on the unreachable broker; what it could not send
    # is counted as dropped, never retried into a later request's way.
    assert dropped("send_failed") > failed_before


def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    publisher = PerfPublisher(["127.0.0.1:9"], "perf")  # not started: nothing drains the queue
    before = dropped("queue_full")
    for _ in range(QUEUE_SIZE + 5):
        publisher.submit(0.0, "inbound", "get", 0.001)
    assert dropped("queue_full") - before == 5

"""Perf records through the channel and a publisher to a real broker: format, drops, accounting."""

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest
from prometheus_client import REGISTRY

from feedsvc.adapters.kafka.perf_channel import PerfChannel
from feedsvc.adapters.kafka.perf_publisher import PerfPublisher
from feedsvc.adapters.kafka.perf_sink import ChannelSink
from feedsvc.api.request_timing import RequestTiming
from feedsvc.compose.schema import init_db
from feedsvc.compose.service import build_service
from feedsvc.core.config import Config
from tests.support.api import IndexedTestClient
from tests.support.kafka import TansuBroker

PERF_LINE = re.compile(rb"\d{4}\|\d{2}\|\d{2}\|\d{2}\|\d{2}\|[a-z]+\|[a-z]+\|\d+")
DROP_REASONS = ("channel_full", "channel_closed", "backlog", "send_failed", "publisher_exit")
# The publisher's flush is bounded (a few seconds); this only catches one that hangs.
STOP_DEADLINE_SECONDS = 60.0


def counted(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def dropped() -> dict[str, float]:
    return {r: counted("feed_perf_records_dropped_total", reason=r) for r in DROP_REASONS}


def published() -> float:
    return counted("feed_perf_records_published_total")


@pytest.fixture
def perf_topic(running_kafka: TansuBroker) -> str:
    return running_kafka.create_topic("perf")


@pytest.fixture
def feed_config(tmp_path: Path) -> Config:
    config = Config.from_env({"FEED_DATA_DIR": str(tmp_path)})
    init_db(config)
    return config


def timed_client(config: Config, bootstrap: str, topic: str) -> Iterator[falcon.testing.TestClient]:
    """The app timing requests onto a channel, with a publisher reading it on a thread.

    When the block ends the channel's only sender closes, so the publisher sees the channel end,
    flushes and returns, as it does when the master and its workers are gone.
    """
    channel = PerfChannel()
    publisher = PerfPublisher(channel.receiver, [bootstrap], topic)
    running = threading.Thread(target=publisher.run, daemon=True)
    running.start()
    service = build_service(config, middleware=[RequestTiming(ChannelSink(channel.sender))])
    try:
        yield IndexedTestClient(service.app, config)
    finally:
        service.close()
        channel.sender.close()
        running.join(STOP_DEADLINE_SECONDS)
        assert not running.is_alive(), "the publisher did not stop when the channel ended"
        channel.receiver.close()


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
    published_before, dropped_before = published(), dropped()
    for client in timed_client(feed_config, running_kafka.bootstrap, perf_topic):
        expected = exercise_api(client)

    records = running_kafka.read_topic(perf_topic, at_least=len(expected))
    assert [tuple(r.value.split(b"|")[5:7]) for r in records] == expected
    for record in records:
        assert PERF_LINE.fullmatch(record.value), record.value
        assert record.key is None
        assert dict(record.headers) == {
            "host": os.uname().nodename.encode(),
            "pid": str(os.getpid()).encode(),
        }
    assert published() - published_before == len(expected)
    assert dropped() == dropped_before


def test_broker_down_requests_are_unaffected_and_every_record_is_counted(
    running_kafka: TansuBroker, perf_topic: str, feed_config: Config
) -> None:
    published_before, dropped_before = published(), dropped()
    running_kafka.stop()
    try:
        for client in timed_client(feed_config, running_kafka.bootstrap, perf_topic):
            expected = exercise_api(client)
    finally:
        running_kafka.start()
    # The publisher stopped within its bounded flush; each record it could not deliver is a
    # counted drop, none is lost without a trace and none published.
    drops = {r: n - dropped_before[r] for r, n in dropped().items()}
    assert sum(drops.values()) == len(expected), drops
    assert drops["channel_full"] == drops["channel_closed"] == 0
    assert published() == published_before


def test_a_full_channel_drops_and_counts_instead_of_waiting() -> None:
    channel = PerfChannel()  # nobody reads: the kernel's buffer fills up
    sink = ChannelSink(channel.sender)
    before = dropped()["channel_full"]
    submitted = 30_000  # more than the buffer holds even at an 8 MiB cap
    for _ in range(submitted):
        sink.submit(0.0, 0, 0.001)
    waiting = 0
    channel.receiver.setblocking(False)
    try:
        while channel.receiver.recv(64):
            waiting += 1
    except BlockingIOError:
        pass
    drops = dropped()["channel_full"] - before
    assert drops > 0 and waiting > 0
    assert drops + waiting == submitted
    channel.sender.close()
    channel.receiver.close()

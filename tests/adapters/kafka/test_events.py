"""Post events: written with the post, delivered to a real broker in order, and never lost."""

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import falcon.testing
import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.engine import Engine

from feedsvc.adapters.kafka.events import SINK_NAME, KafkaEventSink
from feedsvc.adapters.outbox import OutboxRelay, backlog
from feedsvc.compose.schema import init_db
from feedsvc.compose.service import build_service
from feedsvc.core.config import Config
from feedsvc.db.tables import outbound
from tests.support.kafka import TansuBroker

DEADLINE_SECONDS = 60.0
EVENT_FIELDS = ["id", "from", "occurred", "subject", "story", "recipients"]


@dataclass
class EventsService:
    """The feed with post events on, its relay delivering to `topic`, driven in-process."""

    client: falcon.testing.TestClient
    engine: Engine
    topic: str

    def participant(self, name: str) -> str:
        result = self.client.simulate_post("/participant", json={"name": name})
        assert result.status_code == 200, result.text
        return result.json["link"]

    def post(self, sender: str, subject: str) -> dict[str, Any]:
        body = {"subject": subject, "story": f"story of {subject} ✓"}
        result = self.client.simulate_post(f"{sender}/outbound", json=body)
        assert result.status_code == 200, result.text
        return result.json

    def backlog(self) -> int:
        return backlog(self.engine, SINK_NAME)

    def outbound_ids(self) -> dict[str, int]:
        """Outbound id by subject, from the database."""
        with self.engine.connect() as conn:
            return dict(conn.execute(select(outbound.c.subject, outbound.c.id)).all())

    def wait_until_delivered(self) -> None:
        wait_for(lambda: self.backlog() == 0)


def failed_deliveries() -> float:
    labels = {"sink": SINK_NAME}
    return REGISTRY.get_sample_value("feed_outbox_delivery_failures_total", labels) or 0.0


def wait_for(condition: Callable[[], bool]) -> None:
    give_up = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < give_up, "condition not met in time"
        time.sleep(0.1)


def make_config(tmp_path: Path, bootstrap: str = "127.0.0.1:9", topic: str = "events") -> Config:
    return Config.from_env(
        {
            "FEED_DATA_DIR": str(tmp_path),
            "FEED_KAFKA_BOOTSTRAP": bootstrap,
            "FEED_KAFKA_EVENTS_TOPIC": topic,
        }
    )


@pytest.fixture
def events_service(tmp_path: Path, running_kafka: TansuBroker) -> Iterator[EventsService]:
    topic = running_kafka.create_topic("events", partitions=3)
    config = make_config(tmp_path, running_kafka.bootstrap, topic)
    init_db(config)
    # Kafka's post events are wired from the settings; their sink is relayed here with a short
    # backoff, so the test sees the retry after an outage soon (the default caps at 30 s).
    service = build_service(config, start_relay=False)
    sink = KafkaEventSink(config.kafka_bootstrap, topic)
    relay = OutboxRelay(service.engine, [sink], min_backoff_seconds=0.1, max_backoff_seconds=1.0)
    relay.start()
    try:
        yield EventsService(falcon.testing.TestClient(service.app), service.engine, topic)
    finally:
        relay.stop()
        sink.close()
        service.close()


def events_by_sender(broker: TansuBroker, topic: str, at_least: int) -> dict[bytes, list[bytes]]:
    """Raw event values per record key, in partition order (duplicates kept)."""
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for record in broker.read_topic(topic, at_least=at_least):
        by_key[record.key].append(record.value)
    return by_key


def first_occurrences(values: list[bytes]) -> list[dict[str, Any]]:
    """Deduplicated on the outbound id, as a consumer does; a repeat must be byte-identical."""
    seen: dict[int, bytes] = {}
    events = []
    for value in values:
        event = orjson.loads(value)
        if event["id"] in seen:
            assert seen[event["id"]] == value, "a duplicate differs from the first delivery"
            continue
        seen[event["id"]] = value
        events.append(event)
    return events


def test_each_post_is_one_event_in_the_exact_format_keyed_by_sender(
    running_kafka: TansuBroker, events_service: EventsService
) -> None:
    ada, bob, cy = (events_service.participant(name) for name in ("Ada", "Bob", "Cy"))
    for friend in (bob, cy):
        events_service.client.simulate_post(f"{ada}/friends", json={"to": friend})
    posted = {
        subject: events_service.post(sender, subject)
        for subject, sender in [("a1", ada), ("b1", bob), ("a2", ada), ("c1", cy), ("a3", ada)]
    }
    recipients = {ada: 2, bob: 1, cy: 1}
    ids = events_service.outbound_ids()

    by_key = events_by_sender(running_kafka, events_service.topic, at_least=len(posted))
    assert sorted(by_key) == sorted(link.rsplit("/", 1)[1].encode() for link in (ada, bob, cy))
    for key, values in by_key.items():
        for event in (orjson.loads(value) for value in values):
            assert list(event) == EVENT_FIELDS
            response = posted[event["subject"]]
            assert event == {
                "id": ids[event["subject"]],
                **response,
                "recipients": recipients[response["from"]],
            }
            assert event["from"] == f"/participant/{key.decode()}"
    assert [orjson.loads(v)["subject"] for v in by_key[ada.rsplit("/", 1)[1].encode()]] == [
        "a1",
        "a2",
        "a3",
    ]
    events_service.wait_until_delivered()


def test_events_posted_while_the_broker_is_down_arrive_after_it_returns(
    running_kafka: TansuBroker, events_service: EventsService
) -> None:
    senders = [events_service.participant(name) for name in ("Ada", "Bob", "Cy")]
    # The producer is in use before the outage: after the restart the broker has forgotten its
    # producer id, which an idempotent producer cannot recover from without being replaced.
    events_service.post(senders[0], "before")
    events_service.wait_until_delivered()

    failed_before = failed_deliveries()
    running_kafka.stop()
    try:
        subjects = [f"down-{n}" for n in range(12)]
        for n, subject in enumerate(subjects):
            events_service.post(senders[n % 3], subject)
        assert events_service.backlog() > 0
        # Let delivery fail against the stopped broker at least once (bounded, then backoff).
        wait_for(lambda: failed_deliveries() > failed_before)
    finally:
        running_kafka.start()  # memory storage: an empty broker; the fixture re-creates the topic
    events_service.wait_until_delivered()
    events_service.post(senders[1], "after")
    events_service.wait_until_delivered()

    ids = events_service.outbound_ids()
    expected = [*subjects, "after"]
    by_key = events_by_sender(running_kafka, events_service.topic, at_least=len(expected))
    delivered = {key: first_occurrences(values) for key, values in by_key.items()}
    assert sorted(e["subject"] for events in delivered.values() for e in events) == sorted(expected)
    for events in delivered.values():
        sender_ids = [event["id"] for event in events]
        assert sender_ids == sorted(sender_ids), "one sender's events out of order"
        assert all(ids[event["subject"]] == event["id"] for event in events)

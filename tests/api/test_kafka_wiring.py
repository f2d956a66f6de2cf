"""Kafka is wired only when configured, never holds up a worker's boot, and events ride the post."""

import json
import subprocess
import sys
from pathlib import Path

import falcon.testing
import orjson
import pytest
from sqlalchemy import select

from feedsvc.adapters.kafka.events import SINK_NAME, PostEvents
from feedsvc.adapters.kafka.producers import close_quietly, create_producer
from feedsvc.compose.schema import init_db
from feedsvc.compose.service import build_service
from feedsvc.core.config import Config, ConfigError
from feedsvc.db.tables import outbox
from loadtest.harness.ports import free_port

BUILD_APP = """
import json, sys
from feedsvc.core.config import Config
from feedsvc.compose.schema import init_db
from feedsvc.compose.service import build_app
config = Config.from_env()
init_db(config)
build_app(config)
print(json.dumps(sorted(name for name in sys.modules if "kafka" in name.split("."))))
"""


def modules_after_build_app(tmp_path: Path, **environ: str) -> list[str]:
    """Kafka-related modules loaded in a fresh interpreter that built the real app."""
    result = subprocess.run(
        [sys.executable, "-c", BUILD_APP],
        env={"FEED_DATA_DIR": str(tmp_path), **environ},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_without_bootstrap_nothing_kafka_is_imported(tmp_path: Path) -> None:
    assert modules_after_build_app(tmp_path) == []


def test_with_bootstrap_kafka_is_wired_even_if_the_broker_is_down(tmp_path: Path) -> None:
    # Nothing listens on the port: building the app must still succeed (and not wait on it).
    loaded = modules_after_build_app(tmp_path, FEED_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
    assert {"kafka", "feedsvc.compose.kafka"} <= set(loaded)


def test_a_producer_is_constructed_at_once_while_the_broker_is_down() -> None:
    # Without a pinned api_version this raises KafkaTimeoutError after a 30 s bootstrap.
    producer = create_producer([f"127.0.0.1:{free_port()}"], max_block_ms=100)
    close_quietly(producer, timeout=0)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FEED_KAFKA_BOOTSTRAP", "localhost"),
        ("FEED_KAFKA_BOOTSTRAP", "localhost:9092,:9092"),
        ("FEED_KAFKA_BOOTSTRAP", "localhost:70000"),
        ("FEED_KAFKA_PERF_TOPIC", "perf records"),
        ("FEED_KAFKA_EVENTS_TOPIC", "x" * 250),
        ("FEED_KAFKA_PERF_RECORDS", "maybe"),
    ],
)
def test_bad_kafka_settings_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Config.from_env({variable: value})


def test_kafka_settings_and_their_defaults() -> None:
    config = Config.from_env({"FEED_KAFKA_BOOTSTRAP": "k1:9092, k2:9093"})
    assert config.kafka_bootstrap == ("k1:9092", "k2:9093")
    assert (config.kafka_perf_topic, config.kafka_events_topic) == ("feed", "feed.outbound")
    assert config.publishes_perf_records
    assert Config.from_env({}).kafka_bootstrap == ()
    assert not Config.from_env({}).publishes_perf_records
    events_only = {"FEED_KAFKA_BOOTSTRAP": "k1:9092", "FEED_KAFKA_PERF_RECORDS": "false"}
    assert not Config.from_env(events_only).publishes_perf_records


@pytest.fixture
def client_with_events(tmp_path: Path) -> falcon.testing.TestClient:
    config = Config.from_env({"FEED_DATA_DIR": str(tmp_path)})
    init_db(config)
    service = build_service(config, listeners=[PostEvents()], start_relay=False)
    yield falcon.testing.TestClient(service.app), service.engine
    service.close()


def outbox_rows(engine) -> list[tuple[str, str | None, bytes]]:
    """The events sink's rows (the embedded search index queues its own as well)."""
    with engine.connect() as conn:
        query = (
            select(outbox.c.sink, outbox.c.key, outbox.c.payload)
            .where(outbox.c.sink == SINK_NAME)
            .order_by(outbox.c.id)
        )
        return [(sink, key, bytes(payload)) for sink, key, payload in conn.execute(query)]


def test_a_post_writes_its_event_to_the_outbox(client_with_events) -> None:
    client, engine = client_with_events
    ada = client.simulate_post("/participant", json={"name": "Ada"}).json["link"]
    bob = client.simulate_post("/participant", json={"name": "Bob"}).json["link"]
    client.simulate_post(f"{ada}/friends", json={"to": bob})
    posted = client.simulate_post(f"{ada}/outbound", json={"subject": "Hi", "story": "مرحبا 🌍"})
    assert posted.status_code == 200

    [(sink, key, payload)] = outbox_rows(engine)
    assert (sink, key) == (SINK_NAME, ada.rsplit("/", 1)[1])
    assert orjson.loads(payload) == {"id": 1, **posted.json, "recipients": 1}


def test_a_rejected_post_writes_no_event(client_with_events) -> None:
    client, engine = client_with_events
    assert (
        client.simulate_post(
            "/participant/42/outbound", json={"subject": "s", "story": "x"}
        ).status_code
        == 404
    )
    assert client.simulate_post("/participant/42/outbound", json={"subject": ""}).status_code == 400
    assert outbox_rows(engine) == []

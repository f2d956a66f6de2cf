"""KafkaEventSink's decisions with scripted producers: ack, timeout, a broker that forgot us."""

from collections.abc import Callable

import pytest
from kafka.errors import KafkaTimeoutError, UnknownProducerIdError

from feedsvc.adapters.kafka import events
from feedsvc.adapters.kafka.events import KafkaEventSink
from feedsvc.core.protocols import OutboxRow

ROWS = [OutboxRow(1, "7", b'{"id":1}'), OutboxRow(2, "8", b'{"id":2}')]


class ScriptedFuture:
    """A send's future: acknowledged, failed with `error`, or still pending (get times out)."""

    def __init__(self, outcome: str, error: Exception | None = None) -> None:
        self.outcome = outcome
        self.error = error

    @property
    def is_done(self) -> bool:
        return self.outcome != "pending"

    def failed(self) -> bool:
        return self.outcome == "failed"

    def get(self, timeout: float) -> object:
        if self.outcome == "pending":
            raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")
        if self.outcome == "failed":
            raise self.error
        return object()


class ScriptedProducer:
    def __init__(self, outcomes: Callable[[], ScriptedFuture]) -> None:
        self.outcomes = outcomes
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.closed = False

    def send(self, topic: str, key: bytes | None, value: bytes) -> ScriptedFuture:
        self.sent.append((topic, key, value))
        return self.outcomes()

    def close(self, timeout: float) -> None:
        self.closed = True


class ScriptedProducers:
    """Stands in for create_producer: every producer made, and what their sends do next."""

    def __init__(self) -> None:
        self.created: list[ScriptedProducer] = []
        self.next_send: Callable[[], ScriptedFuture] = lambda: ScriptedFuture("acked")

    def __call__(self, bootstrap: object, **settings: object) -> ScriptedProducer:
        self.created.append(ScriptedProducer(lambda: self.next_send()))
        return self.created[-1]


@pytest.fixture
def producers(monkeypatch: pytest.MonkeyPatch) -> ScriptedProducers:
    scripted = ScriptedProducers()
    monkeypatch.setattr(events, "create_producer", scripted)
    return scripted


def test_a_batch_is_sent_keyed_and_returns_once_all_are_acknowledged(
    producers: ScriptedProducers,
) -> None:
    sink = KafkaEventSink(["k:9092"], "feed.outbound")
    sink.deliver(ROWS)
    sink.deliver([OutboxRow(3, None, b"x")])
    [producer] = producers.created
    assert producer.sent == [
        ("feed.outbound", b"7", b'{"id":1}'),
        ("feed.outbound", b"8", b'{"id":2}'),
        ("feed.outbound", None, b"x"),
    ]


def test_unacknowledged_sends_fail_the_batch_and_are_awaited_again_not_resent(
    producers: ScriptedProducers,
) -> None:
    sink = KafkaEventSink(["k:9092"], "feed.outbound")
    pending = ScriptedFuture("pending")
    producers.next_send = lambda: pending
    with pytest.raises(KafkaTimeoutError):
        sink.deliver(ROWS)
    # The broker is back: the same records, still in the producer, get acknowledged.
    pending.outcome = "acked"
    sink.deliver(ROWS)
    [producer] = producers.created
    assert len(producer.sent) == len(ROWS)
    assert not producer.closed


def test_expired_records_are_sent_again(producers: ScriptedProducers) -> None:
    sink = KafkaEventSink(["k:9092"], "feed.outbound")
    producers.next_send = lambda: ScriptedFuture(
        "failed", KafkaTimeoutError("Expiring 2 record(s)")
    )
    with pytest.raises(KafkaTimeoutError):
        sink.deliver(ROWS)
    producers.next_send = lambda: ScriptedFuture("acked")
    sink.deliver(ROWS)
    [producer] = producers.created
    assert len(producer.sent) == 2 * len(ROWS)


def test_a_producer_the_broker_rejected_is_replaced(producers: ScriptedProducers) -> None:
    sink = KafkaEventSink(["k:9092"], "feed.outbound")
    producers.next_send = lambda: ScriptedFuture("failed", UnknownProducerIdError())
    with pytest.raises(UnknownProducerIdError):
        sink.deliver(ROWS)
    producers.next_send = lambda: ScriptedFuture("acked")
    sink.deliver(ROWS)
    first, second = producers.created
    assert first.closed
    assert len(second.sent) == len(ROWS)


def test_records_acknowledged_before_a_timeout_are_not_sent_again(
    producers: ScriptedProducers,
) -> None:
    sink = KafkaEventSink(["k:9092"], "feed.outbound")
    pending = ScriptedFuture("pending")
    outcomes = iter([ScriptedFuture("acked"), pending])
    producers.next_send = lambda: next(outcomes)
    with pytest.raises(KafkaTimeoutError):
        sink.deliver(ROWS)
    pending.outcome = "acked"
    sink.deliver(ROWS)
    [producer] = producers.created
    assert len(producer.sent) == len(ROWS)

"""The perf publisher's accounting of kafka-python's futures, a read at a time, without a broker."""

from kafka.errors import KafkaTimeoutError
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata
from kafka.structs import TopicPartition
from prometheus_client import REGISTRY

from feedsvc.adapters.kafka.perf_metrics import DROPPED, QUEUED
from feedsvc.adapters.kafka.perf_publisher import Unacknowledged

PARTITION = TopicPartition("perf", 0)


def read_of(size: int) -> tuple[FutureProduceResult, list[FutureRecordMetadata]]:
    """One read's records, all in one producer batch, as send() returns them."""
    batch = FutureProduceResult(PARTITION)
    return batch, [FutureRecordMetadata(batch, index, 0, None, 0, 10, 0) for index in range(size)]


def totals() -> tuple[float, float, float, float]:
    sample = REGISTRY.get_sample_value
    return (
        sample("feed_perf_records_published_total") or 0.0,
        sample("feed_perf_records_dropped_total", {"reason": "send_failed"}) or 0.0,
        sample("feed_perf_records_dropped_total", {"reason": "publisher_exit"}) or 0.0,
        sample("feed_perf_records_queued") or 0.0,
    )


def change(before: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(now - then for now, then in zip(totals(), before, strict=True))


def test_reads_are_counted_once_kafka_settled_them_in_order() -> None:
    before = totals()
    unacknowledged = Unacknowledged()
    first, second = read_of(3), read_of(2)
    for _, futures in (first, second):
        unacknowledged.add(futures)
    QUEUED.inc(5)  # as the publisher counts them when it reads them off the channel

    second[0].failure(KafkaTimeoutError("expired"))
    unacknowledged.count_settled()
    assert unacknowledged.count == 5, "a later read settled before an earlier one waits for it"
    assert change(before) == (0, 0, 0, 5)

    first[0].success((100, -1, None))
    unacknowledged.count_settled()
    assert unacknowledged.count == 0
    assert change(before) == (3, 2, 0, 0)


def test_what_is_unsettled_when_the_publisher_stops_is_dropped_once() -> None:
    before = totals()
    unacknowledged = Unacknowledged()
    batch, futures = read_of(4)
    unacknowledged.add(futures)
    QUEUED.inc(4)
    unacknowledged.abandon(DROPPED.labels("publisher_exit"))
    batch.success((7, -1, None))
    unacknowledged.count_settled()
    assert unacknowledged.count == 0
    assert change(before) == (0, 0, 4, 0)

"""Post events: queued in the outbox inside the post's transaction, sent to Kafka by the relay."""

import logging
import time
from collections.abc import Sequence

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata
from prometheus_client import Counter
from sqlalchemy import Connection

from feedsvc.adapters.kafka.producers import close_quietly, create_producer
from feedsvc.adapters.outbox import enqueue
from feedsvc.core.model import Post
from feedsvc.core.protocols import OutboxRow
from feedsvc.core.wire import participant_link, timestamp_text

log = logging.getLogger(__name__)

SINK_NAME = "events"
# deliver() waits this long for the broker to acknowledge a batch; with max_block_ms below it
# bounds one delivery attempt to about 15 s, well inside the outbox lease.
ACKNOWLEDGE_TIMEOUT_SECONDS = 10.0
PRODUCER_SETTINGS = {
    # Events must not be lost: every in-sync replica acknowledges; idempotence keeps retries
    # from reordering or duplicating within one producer session.
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 5,
    # The relay hands over up to 500 events at once; kafka-python's 16 KiB default closed a
    # batch every ~15 events of a 150-word story, each one a wake-up of its network thread and
    # a partition entry of its own: 512 KiB (under the brokers' 1 MB default message limit)
    # costs the worker less CPU per event (README: Kafka).
    "batch_size": 512 * 1024,
    "max_block_ms": 5000,
    "request_timeout_ms": 10_000,
    "delivery_timeout_ms": 30_000,
}

PRODUCER_RESTARTS = Counter(
    "feed_events_producer_restarts", "Event producers replaced after the broker rejected them"
)


def post_event(post: Post, recipients: int) -> bytes:
    """The event's JSON: the outbound id lets consumers drop the duplicates of at-least-once."""
    return orjson.dumps(
        {
            "id": post.id,
            "from": participant_link(post.sender_id),
            "occurred": timestamp_text(post.occurred),
            "subject": post.subject,
            "story": post.story,
            "recipients": recipients,
        }
    )


class PostEvents:
    """The feed's post listener: the event is stored with the post, or neither is."""

    def post_published(self, conn: Connection, post: Post, recipients: int) -> None:
        # Keyed by sender: one sender's events land on one partition, in order.
        enqueue(conn, SINK_NAME, post_event(post, recipients), key=str(post.sender_id))


class KafkaEventSink:
    """The outbox sink for post events: a batch counts as delivered once Kafka acked all of it."""

    name = SINK_NAME
    # How long the relay gathers events into one batch (search's default is 50 ms): a batch
    # costs the worker far more of kafka-python's CPU than an event does (README: Kafka);
    # events wait at most this long.
    gather_seconds = 0.25

    def __init__(self, bootstrap: Sequence[str], topic: str) -> None:
        self._bootstrap = tuple(bootstrap)
        self._topic = topic
        self._producer: KafkaProducer | None = None
        # Sends of the last failed attempt that did not fail themselves, by outbox row id: a retry
        # waits on them again instead of queueing another copy of every row on each retry.
        self._in_flight: dict[int, FutureRecordMetadata] = {}

    def deliver(self, rows: list[OutboxRow]) -> None:
        """Send the batch and wait, bounded, for every acknowledgement; raise if any is missing."""
        producer = self._producer or self._start_producer()
        futures: dict[int, FutureRecordMetadata] = {}
        try:
            for row in rows:
                futures[row.id] = self._send(producer, row)
            deadline = time.monotonic() + ACKNOWLEDGE_TIMEOUT_SECONDS
            for future in futures.values():
                # flush() returns None even when records expired: only the futures tell.
                future.get(timeout=max(0.0, deadline - time.monotonic()))
        except KafkaTimeoutError:
            # Broker down or slow: the producer reconnects by itself and the relay retries later;
            # then sends still pending or already acknowledged are not made again.
            self._in_flight = {row_id: f for row_id, f in futures.items() if not f.failed()}
            raise
        except KafkaError:
            # The broker answered with an error. An idempotent producer whose id the broker lost
            # (a restart: UnknownProducerIdError, then InitProducerId errors) never recovers.
            self._replace_producer()
            raise
        self._in_flight = {}

    def close(self) -> None:
        if self._producer is not None:
            close_quietly(self._producer)
            self._producer = None

    def _send(self, producer: KafkaProducer, row: OutboxRow) -> FutureRecordMetadata:
        pending = self._in_flight.get(row.id)
        if pending is not None and not pending.failed():
            return pending
        key = row.key.encode() if row.key is not None else None
        return producer.send(self._topic, key=key, value=row.payload)

    def _start_producer(self) -> KafkaProducer:
        self._producer = create_producer(self._bootstrap, **PRODUCER_SETTINGS)
        return self._producer

    def _replace_producer(self) -> None:
        log.warning("kafka rejected the event producer; starting a new one")
        PRODUCER_RESTARTS.inc()
        self.close()
        self._in_flight = {}

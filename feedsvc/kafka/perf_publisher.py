"""Best-effort perf records: a bounded queue, drained by a thread that owns the producer."""

import contextlib
import logging
import os
import queue
import socket
import threading
from collections.abc import Sequence

from kafka import KafkaProducer
from kafka.errors import KafkaError
from prometheus_client import Counter

from feedsvc.kafka.perf_records import perf_line
from feedsvc.kafka.producers import close_quietly, create_producer

log = logging.getLogger(__name__)

# Records waiting for the publisher thread; beyond this the request thread drops them.
QUEUE_SIZE = 10_000
# Records handed to the producer and not yet acknowledged (its buffer has no bound of its own
# in kafka-python 3.x); beyond this the publisher drops them instead of growing without end.
MAX_UNACKNOWLEDGED = 10_000
STOP_TIMEOUT_SECONDS = 3.0
PRODUCER_SETTINGS = {
    # Perf records are statistics: one acknowledgement is enough, no idempotence bookkeeping.
    "acks": 1,
    "enable_idempotence": False,
    # Batch for up to 50 ms: thousands of tiny records per second become a few requests.
    "linger_ms": 50,
    # send() for a topic without metadata blocks this long (on the publisher thread only).
    "max_block_ms": 1000,
    "request_timeout_ms": 10_000,
    # Give up on a record after 30 s: a dropped record is better than an unbounded backlog.
    "delivery_timeout_ms": 30_000,
}

PUBLISHED = Counter("feed_perf_records_published", "Perf records acknowledged by Kafka")
DROPPED = Counter(
    "feed_perf_records_dropped",
    "Perf records dropped because Kafka was slow or down",
    ["reason"],
)
_STOP = object()


class PerfPublisher:
    """Takes perf records from request threads without ever blocking and publishes them to Kafka."""

    def __init__(self, bootstrap: Sequence[str], topic: str) -> None:
        self._bootstrap = tuple(bootstrap)
        self._topic = topic
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_SIZE)
        self._unacknowledged = threading.BoundedSemaphore(MAX_UNACKNOWLEDGED)
        self._thread: threading.Thread | None = None
        self._dropped_queue_full = DROPPED.labels("queue_full")
        self._dropped_backlog = DROPPED.labels("backlog")
        self._dropped_failed = DROPPED.labels("send_failed")

    def submit(self, started: float, entity: str, operation: str, duration: float) -> None:
        """Called on the request thread: a non-blocking put, or a counted drop."""
        try:
            self._queue.put_nowait((started, entity, operation, duration))
        except queue.Full:
            self._dropped_queue_full.inc()

    def start(self) -> None:
        """Start in the worker process (after fork): the thread and its producer are per process."""
        self._thread = threading.Thread(target=self._run, name="kafka-perf-publisher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Publish what is queued and close the producer, within a bounded time."""
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=STOP_TIMEOUT_SECONDS)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_SECONDS)

    def _run(self) -> None:
        producer = create_producer(self._bootstrap, **PRODUCER_SETTINGS)
        # Which worker sent a record, as record headers: the record value keeps its fixed format.
        headers = [("host", socket.gethostname().encode()), ("pid", str(os.getpid()).encode())]
        try:
            while (item := self._queue.get()) is not _STOP:
                self._publish(producer, perf_line(*item), headers)
        finally:
            close_quietly(producer)

    def _publish(
        self, producer: KafkaProducer, line: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        if not self._unacknowledged.acquire(blocking=False):
            self._dropped_backlog.inc()
            return
        try:
            future = producer.send(self._topic, value=line, headers=headers)
        except KafkaError as error:
            self._unacknowledged.release()
            self._dropped_failed.inc()
            log.debug("perf record not sent: %s", error)
            return
        future.add_callback(self._acknowledged)
        future.add_errback(self._failed)

    def _acknowledged(self, _metadata: object) -> None:
        self._unacknowledged.release()
        PUBLISHED.inc()

    def _failed(self, error: Exception) -> None:
        self._unacknowledged.release()
        self._dropped_failed.inc()
        log.debug("perf record not delivered: %s", error)

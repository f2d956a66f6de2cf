"""The host's perf publisher: one process, fed by every worker over the perf channel.

`python -m feedsvc.adapters.kafka.perf_publisher FD HELD`, started and restarted by the gunicorn
master (feedsvc.adapters.kafka.perf_supervisor) with the channel's receiving end as descriptor FD;
HELD records were held by predecessors that died, and are counted here as dropped (the master
counts none). One thread takes what the channel holds in one go, formats each record and hands it
to kafka-python, whose own thread batches and sends them; the kernel's socket buffer is the only
queue. The same thread counts what Kafka acknowledged, a read at a time, not a callback per record.
Stops on TERM or INT (stop reading, flush for at most PUBLISHER_FLUSH_SECONDS) and when the
channel ends (the master and all workers are gone).
"""

import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from types import FrameType

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata
from prometheus_client import Counter

from feedsvc.adapters.kafka.perf_channel import PUBLISHER_FLUSH_SECONDS, RECORD, ROUTES
from feedsvc.adapters.kafka.perf_metrics import DROPPED, PUBLISHED, QUEUED
from feedsvc.adapters.kafka.perf_records import perf_line
from feedsvc.adapters.kafka.producers import close_quietly, create_producer
from feedsvc.core.config import Config, ConfigError

log = logging.getLogger(__name__)

# Records handed to the producer and not yet acknowledged (its buffer has no bound of its own
# in kafka-python 3.x); beyond this the publisher drops them instead of growing without end.
MAX_UNACKNOWLEDGED = 20_000
# Records taken off the channel before they go to the producer.
READ_BATCH = 1024
# How long the publisher waits for a quiet channel before it looks whether it should stop.
POLL_SECONDS = 0.2
# Once a record arrived, the publisher sleeps this long before it reads: a worker's send wakes
# a waiting reader (tens of microseconds of the worker's CPU on a VM, measured), a sleeping one
# not. So at most one send in this interval pays for a wake-up, and records reach Kafka at most
# this much later. The channel must hold what arrives meanwhile: 550 records at Linux's default
# buffer cap are 27,500 requests/s.
GATHER_SECONDS = 0.02
# At start, records wait in the channel this long at most for the topic's metadata.
METADATA_WAIT_SECONDS = 5.0
# Batch for up to 200 ms, in batches big enough not to close early (about 70 bytes a record):
# thousands of tiny records per second become a few produce requests, each of which costs
# kafka-python's network thread far more CPU than a record (README: Kafka).
LINGER_SECONDS = 0.2
PRODUCER_SETTINGS = {
    # Perf records are statistics: one acknowledgement is enough, no idempotence bookkeeping.
    "acks": 1,
    "enable_idempotence": False,
    "linger_ms": int(LINGER_SECONDS * 1000),
    "batch_size": 256 * 1024,
    # send() never waits for metadata: without it (broker down since start) a record fails at
    # once and is counted, instead of holding up the channel for seconds per record.
    "max_block_ms": 0,
    "request_timeout_ms": 10_000,
    # Give up on a record after 30 s: a dropped record is better than an unbounded backlog.
    "delivery_timeout_ms": 30_000,
}
_LARGEST_DATAGRAM = 64


class PerfPublisher:
    """Reads perf records off the channel and publishes them to Kafka, best effort, counted."""

    def __init__(self, receiver: socket.socket, bootstrap: Sequence[str], topic: str) -> None:
        self._receiver = receiver
        self._bootstrap = tuple(bootstrap)
        self._topic = topic
        self._stopping = threading.Event()
        self._unacknowledged = Unacknowledged()
        self._partition_turn = 0
        self._partition_until = 0.0
        self._host = socket.gethostname().encode()
        self._headers: dict[int, list[tuple[str, bytes]]] = {}
        self._dropped_backlog = DROPPED.labels("backlog")
        self._dropped_failed = DROPPED.labels("send_failed")
        self._dropped_exit = DROPPED.labels("publisher_exit")

    def stop(self) -> None:
        """Stop reading; run() then flushes what it read and returns. Safe in a signal handler."""
        self._stopping.set()

    def run(self) -> None:
        """Publish until stopped or the channel ends; what Kafka did not acknowledge is counted."""
        producer = create_producer(self._bootstrap, **PRODUCER_SETTINGS)
        # Shared with the master's copy and a successor's: every reader waits in poll().
        self._receiver.setblocking(False)
        arrivals = select.poll()
        arrivals.register(self._receiver, select.POLLIN)
        try:
            self._await_metadata(producer)
            ended = False
            while not (ended or self._stopping.is_set()):
                self._unacknowledged.count_settled()
                if not arrivals.poll(POLL_SECONDS * 1000):
                    continue
                time.sleep(GATHER_SECONDS)
                ended = self._drain(producer)
            try:
                producer.flush(timeout=PUBLISHER_FLUSH_SECONDS)
            except KafkaError as error:
                log.warning("perf records not all acknowledged before stopping: %s", error)
        finally:
            close_quietly(producer, timeout=0)
            self._unacknowledged.count_settled()
            self._unacknowledged.abandon(self._dropped_exit)

    def _await_metadata(self, producer: KafkaProducer) -> None:
        """Let records wait in the channel until the topic is known, bounded, so none fails."""
        give_up = time.monotonic() + METADATA_WAIT_SECONDS
        while not self._stopping.is_set() and time.monotonic() < give_up:
            try:
                producer.partitions_for(self._topic)
            except KafkaTimeoutError:
                time.sleep(0.05)
            else:
                return
        log.warning(
            "no metadata for topic %s yet: records fail until the broker answers", self._topic
        )

    def _drain(self, producer: KafkaProducer) -> bool:
        """Publish all the channel holds now; True once it ended."""
        while True:
            datagrams, ended = self._read_available()
            if datagrams:
                self._publish(producer, datagrams)
            if ended or len(datagrams) < READ_BATCH:
                return ended

    def _read_available(self) -> tuple[list[bytes], bool]:
        """Up to READ_BATCH records the channel holds now, and whether it ended."""
        datagrams: list[bytes] = []
        ended = False
        while len(datagrams) < READ_BATCH:
            try:
                datagram = self._receiver.recv(_LARGEST_DATAGRAM)
            except BlockingIOError:  # empty, or another publisher took it first
                break
            if not datagram:
                log.info("perf channel closed: every sender is gone")
                ended = True
                break
            datagrams.append(datagram)
        return datagrams, ended

    def _publish(self, producer: KafkaProducer, datagrams: list[bytes]) -> None:
        """Hand one read's records to the producer, all to one partition, or count them dropped."""
        # Held from here: a publisher killed now loses them, and the master counts them.
        QUEUED.inc(len(datagrams))
        room = max(0, MAX_UNACKNOWLEDGED - self._unacknowledged.count)
        if len(datagrams) > room:
            self._dropped_backlog.inc(len(datagrams) - room)
            QUEUED.dec(len(datagrams) - room)
            datagrams = datagrams[:room]
        try:
            partition = self._sticky_partition(producer)
        except KafkaError as error:
            self._dropped_failed.inc(len(datagrams))
            QUEUED.dec(len(datagrams))
            log.debug("perf records not sent: %s", error)
            return
        futures: list[FutureRecordMetadata] = []
        for datagram in datagrams:
            pid, started, duration, route = RECORD.unpack(datagram)
            try:
                futures.append(
                    producer.send(
                        self._topic, value=perf_line(started, *ROUTES[route], duration),
                        headers=self._headers_of(pid), partition=partition,
                    )
                )  # fmt: skip
            except KafkaError as error:
                self._dropped_failed.inc()
                QUEUED.dec()
                log.debug("perf record not sent: %s", error)
        self._unacknowledged.add(futures)

    def _sticky_partition(self, producer: KafkaProducer) -> int:
        """The partition for this read: the same for a whole linger period, then the next in
        turn (Kafka's sticky partitioning of keyless records), so one batch is open at a time
        and the producer picks no partition per record. Unlike kafka-python's own pick, it does
        not skip a partition without a leader: such a period's records wait for an election (up
        to delivery_timeout_ms, then they are dropped and counted)."""
        now = time.monotonic()
        if now >= self._partition_until:
            self._partition_until = now + LINGER_SECONDS
            self._partition_turn += 1
        partitions = sorted(producer.partitions_for(self._topic))
        return partitions[self._partition_turn % len(partitions)]

    def _headers_of(self, pid: int) -> list[tuple[str, bytes]]:
        """Which worker served the request, as record headers: the value keeps its format."""
        headers = self._headers.get(pid)
        if headers is None:
            headers = self._headers[pid] = [("host", self._host), ("pid", str(pid).encode())]
        return headers


class Unacknowledged:
    """The records handed to the producer, a read at a time, until Kafka settled each read: the
    publisher's thread counts them, instead of a callback per record on kafka-python's thread."""

    def __init__(self) -> None:
        self._reads: deque[list[FutureRecordMetadata]] = deque()
        self.count = 0
        self._dropped_failed = DROPPED.labels("send_failed")

    def add(self, futures: list[FutureRecordMetadata]) -> None:
        if futures:
            self._reads.append(futures)
            self.count += len(futures)

    def count_settled(self) -> None:
        """Count the reads Kafka has settled in full, oldest first: published or dropped."""
        while self._reads and all(future.is_done for future in self._reads[0]):
            futures = self._reads.popleft()
            failed = [future.exception for future in futures if future.failed()]
            if failed:
                self._dropped_failed.inc(len(failed))
                log.debug("%d perf records not delivered: %s", len(failed), failed[0])
            PUBLISHED.inc(len(futures) - len(failed))
            QUEUED.dec(len(futures))
            self.count -= len(futures)

    def abandon(self, dropped: Counter) -> None:
        """Count what is still unsettled as dropped (the publisher stops), and forget it."""
        if self.count:
            dropped.inc(self.count)
            QUEUED.dec(self.count)
        self._reads.clear()
        self.count = 0


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    try:
        config = Config.from_env()
    except ConfigError as error:
        print(f"feedsvc perf publisher: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format=f"[%(asctime)s] [{os.getpid()}] [%(levelname)s] perf publisher: %(message)s",
    )
    receiver = socket.socket(fileno=int(argv[0]))
    held_by_predecessors = int(argv[1])
    if held_by_predecessors:
        DROPPED.labels("publisher_exit").inc(held_by_predecessors)
    publisher = PerfPublisher(receiver, config.kafka_bootstrap, config.kafka_perf_topic)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        publisher.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # A terminal's hang-up reaches the whole process group; only the master acts on HUP.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    log.info("publishing to %s", config.kafka_perf_topic)
    publisher.run()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

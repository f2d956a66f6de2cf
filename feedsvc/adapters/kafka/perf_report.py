"""`feedsvc perf-report`: the classic per-minute aggregation of the perf topic, for operators."""

import math
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from kafka import KafkaConsumer, TopicPartition

from feedsvc.adapters.kafka.perf_records import PerfRecord, parse_perf_line

# An operator tool may wait for the broker, but answers within seconds when it is unreachable.
CONNECT_TIMEOUT_MS = 10_000
POLL_TIMEOUT_MS = 500
# Reading stops once every partition is past the end it had when the report started.
READ_DEADLINE_SECONDS = 60.0
HEADER = ("minute (UTC)", "entity", "operation", "requests", "req/s", "mean ms", "p50 ms", "p95 ms")


@dataclass(frozen=True, slots=True)
class MinuteStats:
    """One entity/operation in one minute: throughput and latency."""

    minute: datetime
    entity: str
    operation: str
    requests: int
    mean_ms: float
    p50_ms: int
    p95_ms: int

    @property
    def per_second(self) -> float:
        return self.requests / 60


def percentile(sorted_values: Sequence[int], percent: float) -> int:
    """Nearest-rank percentile: a value that was really measured, never an interpolation."""
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def aggregate(records: Iterable[PerfRecord]) -> list[MinuteStats]:
    """Per minute and entity/operation, in time order."""
    durations: dict[tuple[datetime, str, str], list[int]] = defaultdict(list)
    for record in records:
        durations[(record.minute, record.entity, record.operation)].append(record.duration_ms)
    stats = []
    for (minute, entity, operation), values in sorted(durations.items()):
        values.sort()
        stats.append(
            MinuteStats(
                minute,
                entity,
                operation,
                requests=len(values),
                mean_ms=sum(values) / len(values),
                p50_ms=percentile(values, 50),
                p95_ms=percentile(values, 95),
            )
        )
    return stats


def parse_values(values: Iterable[bytes]) -> tuple[list[PerfRecord], int]:
    """The perf records among `values`, and how many values were not perf records."""
    records, malformed = [], 0
    for value in values:
        try:
            records.append(parse_perf_line(value))
        except (ValueError, UnicodeDecodeError):
            malformed += 1
    return records, malformed


def format_table(stats: Sequence[MinuteStats]) -> str:
    rows = [HEADER] + [
        (
            s.minute.strftime("%Y-%m-%d %H:%M"),
            s.entity,
            s.operation,
            str(s.requests),
            f"{s.per_second:.1f}",
            f"{s.mean_ms:.1f}",
            str(s.p50_ms),
            str(s.p95_ms),
        )
        for s in stats
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADER))]
    # Names left-aligned, numbers right-aligned.
    return "\n".join(
        "  ".join(
            cell.ljust(width) if column < 3 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


class PerfTopicReader:
    """Reads what the perf topic holds now, without a consumer group: no join, no commits."""

    def __init__(self, bootstrap: Sequence[str], topic: str) -> None:
        self._topic = topic
        self._consumer = KafkaConsumer(
            bootstrap_servers=list(bootstrap),
            bootstrap_timeout_ms=CONNECT_TIMEOUT_MS,
            request_timeout_ms=CONNECT_TIMEOUT_MS,
            group_id=None,
            enable_auto_commit=False,
        )

    def values(self, since_minutes: float | None) -> Iterator[bytes]:
        """Every record value from `since_minutes` ago (None: from the beginning) up to now."""
        partitions = self._partitions()
        self._consumer.assign(partitions)
        ends = self._consumer.end_offsets(partitions)
        if since_minutes is None:
            self._consumer.seek_to_beginning(*partitions)
        else:
            since_ms = int((time.time() - since_minutes * 60) * 1000)
            starts = self._consumer.offsets_for_times({p: since_ms for p in partitions})
            for partition in partitions:
                found = starts.get(partition)
                self._consumer.seek(partition, found.offset if found else ends[partition])
        give_up = time.monotonic() + READ_DEADLINE_SECONDS
        while any(self._consumer.position(p) < ends[p] for p in partitions):
            if time.monotonic() > give_up:
                raise TimeoutError(f"could not read {self._topic} to its end in time")
            for batch in self._consumer.poll(timeout_ms=POLL_TIMEOUT_MS).values():
                # The whole batch, also past the end: some brokers (Tansu) report as the end the
                # last batch's base offset + 1.
                for message in batch:
                    yield message.value

    def close(self) -> None:
        self._consumer.close()

    def _partitions(self) -> list[TopicPartition]:
        numbers = self._consumer.partitions_for_topic(self._topic)
        if not numbers:
            raise LookupError(f"topic {self._topic!r} does not exist")
        return [TopicPartition(self._topic, number) for number in sorted(numbers)]


def perf_report(bootstrap: Sequence[str], topic: str, since_minutes: float | None) -> str:
    """The report as printed: the table, then how many records it covers."""
    reader = PerfTopicReader(bootstrap, topic)
    try:
        records, malformed = parse_values(reader.values(since_minutes))
    finally:
        reader.close()
    summary = f"{len(records)} perf records from {topic}"
    if malformed:
        summary += f"; {malformed} records skipped, not in the perf format"
    return f"{format_table(aggregate(records))}\n{summary}"

"""Perf records as existing aggregators read them: `YYYY|MM|DD|HH|MI|entity|operation|ms`."""

import functools
import time
from dataclasses import dataclass
from datetime import datetime

ENTITIES = frozenset({"participant", "friends", "inbound", "outbound"})
OPERATIONS = frozenset({"get", "post", "search"})
FIELDS = 8


@dataclass(frozen=True, slots=True)
class PerfRecord:
    """One API request: the UTC minute it started in, what it did and how long it took."""

    minute: datetime
    entity: str
    operation: str
    duration_ms: int


def perf_line(started: float, entity: str, operation: str, duration_seconds: float) -> bytes:
    """The record for a request that started at `started` (epoch seconds), in whole milliseconds."""
    duration_ms = int(duration_seconds * 1000 + 0.5)
    return b"%s|%s|%s|%d" % (
        minute_prefix(int(started // 60)),
        entity.encode(),
        operation.encode(),
        duration_ms,
    )


@functools.lru_cache(maxsize=4)
def minute_prefix(minute: int) -> bytes:
    """`YYYY|MM|DD|HH|MI` of a UTC minute since the epoch: formatted once, not per record."""
    at = time.gmtime(minute * 60)
    return b"%04d|%02d|%02d|%02d|%02d" % (at.tm_year, at.tm_mon, at.tm_mday, at.tm_hour, at.tm_min)


def parse_perf_line(line: bytes) -> PerfRecord:
    """The record in `line`; ValueError for anything that is not exactly the format above."""
    fields = line.decode("ascii").split("|")
    if len(fields) != FIELDS:
        raise ValueError(f"expected {FIELDS} |-separated fields: {line!r}")
    year, month, day, hour, minute, entity, operation, duration = fields
    if entity not in ENTITIES or operation not in OPERATIONS:
        raise ValueError(f"unknown entity or operation: {line!r}")
    if not all(part.isdigit() for part in (year, month, day, hour, minute, duration)):
        raise ValueError(f"non-numeric time or duration: {line!r}")
    at = datetime(int(year), int(month), int(day), int(hour), int(minute))
    return PerfRecord(at, entity, operation, int(duration))

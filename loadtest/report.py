"""Report arithmetic kept pure (no I/O, no clocks) so percentiles and rates can be unit-tested."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

PERCENTILES = (50.0, 95.0, 99.0)


def percentile(sorted_samples: Sequence[float], percent: float) -> float:
    """Linear interpolation between closest ranks (numpy's default): smooth on small samples."""
    if not sorted_samples:
        return math.nan
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"percent must be within 0..100, got {percent}")
    position = (len(sorted_samples) - 1) * percent / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_samples) - 1)
    weight = position - lower
    return sorted_samples[lower] + (sorted_samples[upper] - sorted_samples[lower]) * weight


def per_minute(count: int, seconds: float) -> float:
    """Requests per minute, the unit the classic news-feed load test reports."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    return count * 60.0 / seconds


def cpu_share(cpu_seconds: float, wall_seconds: float, cores: int) -> float:
    """Fraction of the whole machine a process group used: CPU time over wall time x cores."""
    if wall_seconds <= 0 or cores <= 0:
        raise ValueError("wall_seconds and cores must be positive")
    return cpu_seconds / (wall_seconds * cores)


@dataclass(frozen=True)
class OperationSummary:
    """One row of the report: an entity/operation pair such as participant.get."""

    operation: str
    requests: int
    errors: int
    rpm: float
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def per_second(self) -> float:
        return self.rpm / 60.0

    def as_dict(self) -> dict[str, object]:
        """Also split into entity and action (participant.get -> participant, get) for queries."""
        entity, _, action = self.operation.partition(".")
        return {"entity": entity, "action": action, **asdict(self)}


def summarize(
    operation: str, latencies_ms: Iterable[float], errors: int, seconds: float
) -> OperationSummary:
    """Successful requests give the rate and the latency figures; errors are only counted."""
    ordered = sorted(latencies_ms)
    count = len(ordered)
    p50, p95, p99 = (percentile(ordered, p) for p in PERCENTILES)
    return OperationSummary(
        operation=operation,
        requests=count,
        errors=errors,
        rpm=per_minute(count, seconds),
        mean_ms=math.fsum(ordered) / count if count else math.nan,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=ordered[-1] if ordered else math.nan,
    )


def summarize_all(
    latencies_ms: Mapping[str, Sequence[float]], errors: Mapping[str, int], seconds: float
) -> list[OperationSummary]:
    """One summary per operation plus a TOTAL row over all of them."""
    operations = sorted(set(latencies_ms) | set(errors))
    rows = [
        summarize(op, latencies_ms.get(op, ()), errors.get(op, 0), seconds) for op in operations
    ]
    every_sample = [sample for op in operations for sample in latencies_ms.get(op, ())]
    rows.append(summarize("TOTAL", every_sample, sum(errors.values()), seconds))
    return rows


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain fixed-width table: right-aligned numbers, readable in any terminal or log."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(lines)


def summary_table(summaries: Iterable[OperationSummary]) -> str:
    headers = (
        "operation",
        "requests",
        "req/min",
        "mean ms",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
    )
    rows = (
        (s.operation, s.requests, s.rpm, s.mean_ms, s.p50_ms, s.p95_ms, s.p99_ms, s.errors)
        for s in summaries
    )
    return format_table(headers, rows)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)

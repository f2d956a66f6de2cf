"""Report arithmetic kept pure (no I/O, no clocks) so percentiles and rates can be unit-tested."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hdrh.histogram import HdrHistogram

# Latencies are recorded in whole microseconds, 1 us .. 1 h, to 3 significant figures.
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_FIGURES = 3
US_PER_MS = 1000.0


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


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


def histogram_of(latencies_us: Iterable[int]) -> HdrHistogram:
    """Counts equal values first: hdrh records in pure Python, so one call per distinct value."""
    histogram = new_histogram()
    for value, count in Counter(latencies_us).items():
        histogram.record_value(min(max(value, LOWEST_US), HIGHEST_US), count)
    return histogram


def merged(histograms: Iterable[HdrHistogram]) -> HdrHistogram:
    """One histogram counting every value of the given ones (across processes or operations)."""
    total = new_histogram()
    for histogram in histograms:
        total.add(histogram)
    return total


def write_hgrm(path: Path, histogram: HdrHistogram) -> None:
    """HdrHistogram's percentile-distribution text (values in ms), for its plotters."""
    with path.open("wb") as handle:
        histogram.output_percentile_distribution(handle, US_PER_MS)


@dataclass(frozen=True)
class OperationSummary:
    """One row of the report: an entity/operation pair such as participant.get."""

    operation: str
    requests: int
    errors: int
    rpm: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float

    @property
    def per_second(self) -> float:
        return self.rpm / 60.0

    def as_dict(self) -> dict[str, object]:
        """Also split into entity and action (participant.get -> participant, get) for queries."""
        entity, _, action = self.operation.partition(".")
        return {"entity": entity, "action": action, **asdict(self)}


def _at(histogram: HdrHistogram, percent: float) -> float:
    return histogram.get_value_at_percentile(percent) / US_PER_MS


def summarize(
    operation: str, histogram: HdrHistogram, errors: int, seconds: float
) -> OperationSummary:
    """Successful requests give the rate and the latency figures; errors are only counted."""
    count = histogram.get_total_count()
    nan = math.nan
    return OperationSummary(
        operation=operation,
        requests=count,
        errors=errors,
        rpm=per_minute(count, seconds),
        mean_ms=histogram.get_mean_value() / US_PER_MS if count else nan,
        p50_ms=_at(histogram, 50.0) if count else nan,
        p90_ms=_at(histogram, 90.0) if count else nan,
        p95_ms=_at(histogram, 95.0) if count else nan,
        p99_ms=_at(histogram, 99.0) if count else nan,
        p999_ms=_at(histogram, 99.9) if count else nan,
        max_ms=histogram.get_max_value() / US_PER_MS if count else nan,
    )


def summarize_all(
    histograms: Mapping[str, HdrHistogram], errors: Mapping[str, int], seconds: float
) -> list[OperationSummary]:
    """One summary per operation plus a TOTAL row over all of them."""
    operations = sorted(set(histograms) | set(errors))
    rows = [
        summarize(op, histograms.get(op) or new_histogram(), errors.get(op, 0), seconds)
        for op in operations
    ]
    total = merged(histograms.values())
    rows.append(summarize("TOTAL", total, sum(errors.values()), seconds))
    return rows


def per_second_series(
    histograms: Mapping[int, HdrHistogram], errors: Mapping[int, int], seconds: float
) -> list[dict[str, float]]:
    """Throughput and p99 of each whole second of the run (by completion time): stalls show."""
    series = []
    for second in range(max(1, math.ceil(seconds))):
        histogram = histograms.get(second)
        count = histogram.get_total_count() if histogram is not None else 0
        series.append(
            {
                "second": second,
                "requests": count,
                "errors": errors.get(second, 0),
                "p99_ms": _at(histogram, 99.0) if histogram is not None and count else math.nan,
            }
        )
    return series


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
        "operation", "requests", "req/min", "mean ms", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms",
        "max ms", "errors",
    )  # fmt: skip
    rows = (
        (s.operation, s.requests, s.rpm, s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms,
         s.max_ms, s.errors)
        for s in summaries
    )  # fmt: skip
    return format_table(headers, rows)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)

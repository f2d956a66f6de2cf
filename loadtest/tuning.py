"""The worker-count recommendation, a pure function of the sweep's rows so it can be unit-tested."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TOLERANCE = 0.05
DEFAULT_P99_LIMIT_MS = 100.0


@dataclass(frozen=True)
class SweepRow:
    """What one worker count achieved under the same load."""

    workers: int
    throughput: float  # successful requests per second
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True)
class Recommendation:
    workers: int | None
    reason: str


def recommend_workers(
    rows: Sequence[SweepRow],
    p99_limit_ms: float = DEFAULT_P99_LIMIT_MS,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Recommendation:
    """The knee: the fewest workers within `tolerance` of the best throughput, p99 under the limit.

    Counts that produced errors are never recommended and do not set the best throughput.
    """
    clean = [row for row in rows if row.errors == 0 and row.throughput > 0]
    if not clean:
        return Recommendation(None, "no worker count ran without errors")
    best = max(clean, key=lambda row: row.throughput)
    floor = best.throughput * (1.0 - tolerance)
    candidates = sorted(
        (row for row in clean if row.throughput >= floor and row.p99_ms <= p99_limit_ms),
        key=lambda row: row.workers,
    )
    if not candidates:
        return Recommendation(
            None,
            f"no worker count within {tolerance:.0%} of the best throughput"
            f" ({best.throughput:,.0f} req/s at {best.workers}) kept p99 <= {p99_limit_ms:g} ms",
        )
    knee = candidates[0]
    return Recommendation(
        knee.workers,
        f"{knee.workers} workers: {knee.throughput:,.0f} req/s is within {tolerance:.0%} of the"
        f" best ({best.throughput:,.0f} req/s at {best.workers}) with p99 {knee.p99_ms:.1f} ms"
        f" <= {p99_limit_ms:g} ms",
    )

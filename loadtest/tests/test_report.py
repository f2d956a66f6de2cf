"""Report arithmetic on synthetic data: percentiles, rates, CPU share, summaries, the table."""

import math

import pytest

from loadtest.report import (
    cpu_share,
    format_table,
    per_minute,
    percentile,
    summarize,
    summarize_all,
)


def test_percentiles_of_one_to_a_hundred_interpolate_between_ranks():
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 50) == pytest.approx(50.5)
    assert percentile(samples, 95) == pytest.approx(95.05)
    assert percentile(samples, 99) == pytest.approx(99.01)
    assert percentile(samples, 100) == 100.0


def test_percentile_of_a_single_sample_is_that_sample():
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_is_nan_and_bad_percent_is_refused():
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_one_slow_request_in_a_hundred_shows_at_p99_not_p95():
    samples = sorted([1.0] * 99 + [1000.0])
    assert percentile(samples, 95) == 1.0
    assert percentile(samples, 99) > 1.0
    assert percentile(samples, 100) == 1000.0


def test_requests_per_minute():
    assert per_minute(600, 30.0) == 1200.0
    assert per_minute(0, 2.0) == 0.0
    with pytest.raises(ValueError):
        per_minute(1, 0.0)


def test_cpu_share_is_cpu_time_over_wall_time_times_cores():
    assert cpu_share(cpu_seconds=3.0, wall_seconds=10.0, cores=2) == pytest.approx(0.15)
    assert cpu_share(cpu_seconds=20.0, wall_seconds=10.0, cores=2) == pytest.approx(1.0)


def test_summary_uses_successes_for_rate_and_latency_and_counts_errors_apart():
    latencies = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    summary = summarize("participant.get", latencies, errors=2, seconds=2.0)
    assert summary.requests == 4
    assert summary.errors == 2
    assert summary.rpm == 120.0
    assert summary.per_second == 2.0
    assert summary.mean_ms == 2.5
    assert summary.p50_ms == 2.5
    assert summary.max_ms == 4.0


def test_summary_of_an_operation_that_only_failed():
    summary = summarize("outbound.post", [], errors=3, seconds=1.0)
    assert (summary.requests, summary.errors, summary.rpm) == (0, 3, 0.0)
    assert math.isnan(summary.p99_ms)


def test_summarize_all_adds_a_total_over_every_operation():
    rows = summarize_all(
        {"inbound.get": [1.0, 2.0], "participant.get": [3.0]},
        {"outbound.post": 1},
        seconds=60.0,
    )
    assert [r.operation for r in rows] == [
        "inbound.get",
        "outbound.post",
        "participant.get",
        "TOTAL",
    ]
    total = rows[-1]
    assert (total.requests, total.errors, total.rpm, total.max_ms) == (3, 1, 3.0, 3.0)


def test_table_aligns_columns_and_formats_numbers():
    rows = [("a", 12345.6, 1.234), ("bb", 5.0, math.nan)]
    table = format_table(("op", "req/min", "p99 ms"), rows)
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert "12,346" in lines[2] and "1.23" in lines[2]
    assert lines[3].endswith("-")

"""Report arithmetic on synthetic data: percentiles, histograms, per-second series, the table."""

import math
import random

import pytest
from hdrh.histogram import HdrHistogram

from loadtest.report import (
    cpu_share,
    format_table,
    histogram_of,
    merged,
    new_histogram,
    per_minute,
    per_second_series,
    percentile,
    summarize,
    summarize_all,
    write_hgrm,
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


def ms(*values: float) -> list[int]:
    return [round(value * 1000) for value in values]


def test_summary_uses_successes_for_rate_and_latency_and_counts_errors_apart():
    histogram = histogram_of(ms(4.0, 1.0, 3.0, 2.0))
    summary = summarize("participant.get", histogram, errors=2, seconds=2.0)
    assert summary.requests == 4
    assert summary.errors == 2
    assert summary.rpm == 120.0
    assert summary.per_second == 2.0
    assert summary.mean_ms == pytest.approx(2.5, rel=1e-3)
    assert summary.p50_ms == pytest.approx(2.0, rel=1e-3)
    assert summary.max_ms == pytest.approx(4.0, rel=1e-3)


def test_summary_of_an_operation_that_only_failed():
    summary = summarize("outbound.post", new_histogram(), errors=3, seconds=1.0)
    assert (summary.requests, summary.errors, summary.rpm) == (0, 3, 0.0)
    assert math.isnan(summary.p99_ms)


def test_summarize_all_adds_a_total_over_every_operation():
    rows = summarize_all(
        {"inbound.get": histogram_of(ms(1.0, 2.0)), "participant.get": histogram_of(ms(3.0))},
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
    assert (total.requests, total.errors, total.rpm) == (3, 1, 3.0)
    assert total.max_ms == pytest.approx(3.0, rel=1e-3)


def test_histograms_of_two_processes_merge_to_the_histogram_of_all_their_samples():
    rng = random.Random(7)
    first = [rng.randrange(100, 50_000) for _ in range(5000)]
    second = [rng.randrange(40_000, 2_000_000) for _ in range(500)]
    # Encoded and decoded as between generator processes and their parent.
    parts = [HdrHistogram.decode(histogram_of(samples).encode()) for samples in (first, second)]
    together = merged(parts)
    reference = histogram_of(first + second)
    assert together.get_total_count() == 5500
    for percent in (50.0, 90.0, 99.0, 99.9, 100.0):
        assert together.get_value_at_percentile(percent) == reference.get_value_at_percentile(
            percent
        )
    # 500 slow samples in 5500 are 9%: above p90 every value comes from the slow process.
    assert together.get_value_at_percentile(99.0) >= 40_000
    assert together.get_value_at_percentile(90.0) < 50_000 * 1.001


def test_per_second_series_shows_throughput_and_p99_of_each_second_and_gaps():
    seconds = {0: histogram_of(ms(*[1.0] * 100)), 2: histogram_of(ms(*[1.0] * 98, 900.0, 950.0))}
    series = per_second_series(seconds, {2: 3}, seconds=3.0)
    assert [row["second"] for row in series] == [0, 1, 2]
    assert [row["requests"] for row in series] == [100, 0, 100]
    assert [row["errors"] for row in series] == [0, 0, 3]
    assert series[0]["p99_ms"] == pytest.approx(1.0, rel=1e-3)
    assert math.isnan(series[1]["p99_ms"])
    assert series[2]["p99_ms"] == pytest.approx(900.0, rel=1e-3)


def test_merged_histogram_is_written_as_a_percentile_distribution_in_ms(tmp_path):
    path = tmp_path / "latency.hgrm"
    write_hgrm(path, histogram_of(ms(1.0, 2.0, 3.0, 500.0)))
    text = path.read_text()
    assert "Value     Percentile TotalCount" in text
    assert "#[Max     =      500.2" in text  # 500 ms to 3 significant figures
    assert "TotalCount     =        4.000]" in text


def test_table_aligns_columns_and_formats_numbers():
    rows = [("a", 12345.6, 1.234), ("bb", 5.0, math.nan)]
    table = format_table(("op", "req/min", "p99 ms"), rows)
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert "12,346" in lines[2] and "1.23" in lines[2]
    assert lines[3].endswith("-")

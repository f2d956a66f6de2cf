"""The knee rule on synthetic sweeps."""

from loadtest.tuning import SweepRow, recommend_workers


def row(workers: int, throughput: float, p99: float = 20.0, errors: int = 0) -> SweepRow:
    return SweepRow(workers, throughput, p50_ms=p99 / 4, p99_ms=p99, errors=errors)


def test_smallest_count_within_five_percent_of_the_best():
    rows = [row(1, 500), row(2, 900), row(3, 960), row(4, 1000), row(5, 990), row(6, 970)]
    assert recommend_workers(rows).workers == 3  # 960 >= 950; 2 workers (900) is not


def test_exactly_at_the_tolerance_counts():
    rows = [row(1, 950), row(2, 1000)]
    assert recommend_workers(rows, tolerance=0.05).workers == 1


def test_p99_over_the_limit_disqualifies_a_count():
    rows = [row(2, 990, p99=150), row(3, 995, p99=80), row(4, 1000, p99=90)]
    assert recommend_workers(rows, p99_limit_ms=100).workers == 3


def test_counts_with_errors_neither_qualify_nor_set_the_best():
    rows = [row(1, 700), row(2, 800), row(3, 2000, errors=3)]
    recommendation = recommend_workers(rows)
    assert recommendation.workers == 2
    assert "800" in recommendation.reason


def test_no_recommendation_when_every_fast_count_is_too_slow_at_p99():
    rows = [row(1, 500, p99=20), row(2, 1000, p99=300)]
    recommendation = recommend_workers(rows, p99_limit_ms=100)
    assert recommendation.workers is None
    assert "p99" in recommendation.reason


def test_no_recommendation_without_a_clean_run():
    assert recommend_workers([row(1, 100, errors=1)]).workers is None
    assert recommend_workers([]).workers is None


def test_row_order_does_not_matter():
    rows = [row(4, 1000), row(1, 400), row(3, 990), row(2, 700)]
    assert recommend_workers(rows).workers == 3

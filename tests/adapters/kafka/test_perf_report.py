"""perf-report's aggregation: per minute and entity/operation, throughput, mean, p50, p95."""

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from kafka import KafkaProducer

from feedsvc.adapters.kafka.perf_records import PerfRecord, perf_line
from feedsvc.adapters.kafka.perf_report import (
    MinuteStats,
    aggregate,
    format_table,
    parse_values,
    percentile,
)
from tests.support.kafka import TansuBroker

MINUTE = datetime(2026, 3, 4, 5, 6)
NEXT_MINUTE = datetime(2026, 3, 4, 5, 7)


def test_percentiles_are_nearest_rank_values() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 95) == 95
    assert percentile([7], 50) == 7
    assert percentile([7], 95) == 7
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile([1, 2, 3, 4], 95) == 4


def test_groups_by_minute_entity_and_operation_in_time_order() -> None:
    records = [
        PerfRecord(NEXT_MINUTE, "inbound", "get", 4),
        *(PerfRecord(MINUTE, "outbound", "post", ms) for ms in (30, 10, 20, 40)),
        PerfRecord(MINUTE, "inbound", "get", 2),
        PerfRecord(MINUTE, "outbound", "search", 9),
    ]
    assert aggregate(records) == [
        MinuteStats(MINUTE, "inbound", "get", 1, 2.0, 2, 2),
        MinuteStats(MINUTE, "outbound", "post", 4, 25.0, 20, 40),
        MinuteStats(MINUTE, "outbound", "search", 1, 9.0, 9, 9),
        MinuteStats(NEXT_MINUTE, "inbound", "get", 1, 4.0, 4, 4),
    ]


def test_nothing_to_aggregate() -> None:
    assert aggregate([]) == []


def test_throughput_is_per_second_over_the_minute() -> None:
    assert MinuteStats(MINUTE, "inbound", "get", 90, 1.0, 1, 1).per_second == 1.5


def test_malformed_values_are_counted_not_fatal() -> None:
    records, malformed = parse_values([b"2026|03|04|05|06|inbound|get|7", b"junk", b"\xff"])
    assert records == [PerfRecord(MINUTE, "inbound", "get", 7)]
    assert malformed == 2


def test_table_has_a_header_and_one_aligned_row_per_group() -> None:
    table = format_table([MinuteStats(MINUTE, "outbound", "post", 120, 12.25, 10, 31)])
    header, row = table.splitlines()
    assert header.split() == [
        "minute",
        "(UTC)",
        "entity",
        "operation",
        "requests",
        "req/s",
        "mean",
        "ms",
        "p50",
        "ms",
        "p95",
        "ms",
    ]
    assert row.split() == [
        "2026-03-04",
        "05:06",
        "outbound",
        "post",
        "120",
        "2.0",
        "12.2",
        "10",
        "31",
    ]
    assert len(header) == len(row)


def run_perf_report(*args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FEED_")}
    return subprocess.run(
        [str(Path(sys.executable).parent / "feedsvc"), "perf-report", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def filled_perf_topic(running_kafka: TansuBroker) -> str:
    """A perf topic with a known minute of records, plus one value that is not a perf record."""
    topic = running_kafka.create_topic("perf", partitions=2)
    producer = KafkaProducer(bootstrap_servers=running_kafka.bootstrap)
    try:
        started = time.time()
        lines = [perf_line(started, "outbound", "post", ms / 1000) for ms in range(1, 21)]
        lines += [perf_line(started, "inbound", "get", 0.003), b"not a perf record"]
        for future in [producer.send(topic, value=line) for line in lines]:
            future.get(timeout=30)
    finally:
        producer.close()
    return topic


def test_command_reports_the_topic(running_kafka: TansuBroker, filled_perf_topic: str) -> None:
    result = run_perf_report(
        "--bootstrap", running_kafka.bootstrap, "--topic", filled_perf_topic, "--from-beginning"
    )
    assert result.returncode == 0, result.stderr
    header, *rows, summary = result.stdout.splitlines()
    assert header.split()[:4] == ["minute", "(UTC)", "entity", "operation"]
    # requests, req/s, mean, p50, p95 of outbound/post durations 1..20 ms, then inbound/get 3 ms
    assert [row.split()[2:] for row in rows] == [
        ["inbound", "get", "1", "0.0", "3.0", "3", "3"],
        ["outbound", "post", "20", "0.3", "10.5", "10", "19"],
    ]
    assert (
        summary
        == f"21 perf records from {filled_perf_topic}; 1 records skipped, not in the perf format"
    )


def test_command_reads_the_recent_minutes(
    running_kafka: TansuBroker, filled_perf_topic: str
) -> None:
    result = run_perf_report(
        "--bootstrap", running_kafka.bootstrap, "--topic", filled_perf_topic, "--minutes", "5"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("21 perf records")


def test_command_explains_a_missing_topic(running_kafka: TansuBroker) -> None:
    result = run_perf_report("--bootstrap", running_kafka.bootstrap, "--topic", "no.such.topic")
    assert result.returncode == 1
    assert "no.such.topic" in result.stderr and "does not exist" in result.stderr


def test_command_needs_a_broker() -> None:
    result = run_perf_report()
    assert result.returncode == 1
    assert "--bootstrap or FEED_KAFKA_BOOTSTRAP" in result.stderr

"""Two-second smoke loads against a real gunicorn (config/gunicorn.conf.py, 2 workers)."""

import subprocess
import sys

import orjson
import pytest

from loadtest.generator import LoadPlan, run_load
from loadtest.harness.gunicorn import REPO_ROOT, GunicornServer

# They boot gunicorn through the benchmark harness: process tests.
pytestmark = pytest.mark.process

SMOKE_SECONDS = 2.0


@pytest.fixture(scope="module")
def feed_server():
    with GunicornServer().serve({}, workers=2) as server:
        yield server


def test_classic_load_exercises_every_write_path_without_errors(feed_server):
    plan = LoadPlan(
        feed_server.host,
        feed_server.port,
        mode="classic",
        concurrency=4,
        duration=SMOKE_SECONDS,
        processes=2,
        search_percent=0,
    )
    result = run_load(plan)
    by_operation = {summary.operation: summary for summary in result.summaries}
    for operation in ("participant.post", "friends.post", "outbound.post"):
        assert by_operation[operation].requests > 0, operation
    assert result.total.errors == 0, result.error_kinds
    assert result.total.p50_ms <= result.total.p99_ms
    assert 0 < result.generator_cpu_share <= 1


def test_command_line_read_heavy_run_prints_the_table_and_writes_json(feed_server, tmp_path):
    report = tmp_path / "report.json"
    target = f"{feed_server.host}:{feed_server.port}"
    completed = subprocess.run(
        [sys.executable, "-m", "loadtest", target, "--mode", "read-heavy", "-c", "4",
         "-d", str(SMOKE_SECONDS), "--seed", "3", "--json", str(report)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "inbound.get" in completed.stdout and "generator CPU" in completed.stdout
    document = orjson.loads(report.read_bytes())
    operations = {row["operation"]: row for row in document["operations"]}
    assert operations["inbound.get"]["requests"] > 0
    assert operations["TOTAL"]["errors"] == 0
    assert {"rpm", "mean_ms", "p50_ms", "p95_ms", "p99_ms"} <= set(operations["TOTAL"])
    assert 0 < document["generator_cpu_share"] <= 1
    assert "ok" in completed.stderr  # the live progress line


def test_rate_limited_run_stays_near_its_cap(feed_server):
    plan = LoadPlan(
        feed_server.host, feed_server.port, mode="post-participant", concurrency=2,
        duration=SMOKE_SECONDS, processes=1, rate=20,
    )  # fmt: skip
    result = run_load(plan)
    assert 0 < result.total.requests <= 20 * SMOKE_SECONDS + 2

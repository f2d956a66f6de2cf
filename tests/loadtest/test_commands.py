"""The benchmark and tuning commands run end to end on tiny settings (real gunicorn servers)."""

import csv
import importlib.util
import subprocess
import sys

import orjson
import pytest

from loadtest.harness.gunicorn import REPO_ROOT

# They boot gunicorn through the benchmark harness: process tests.
pytestmark = pytest.mark.process


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def test_bench_reports_each_operation_as_a_ratio_of_the_hello_ceiling(tmp_path):
    report = tmp_path / "bench.json"
    completed = run(
        "loadtest.bench", "--workers", "1", "--rounds", "2", "--duration", "0.5",
        "--concurrency", "2", "--operations", "hello,get-participant", "--json", str(report),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    assert "x ceiling" in completed.stdout and "machine:" in completed.stdout
    pairs = {pair["operation"]: pair for pair in orjson.loads(report.read_bytes())["pairs"]}
    assert pairs["hello"]["ratio_to_ceiling"] == 1.0
    participant = pairs["get-participant"]
    assert participant["ratio_to_ceiling"] > 0
    assert participant["errors"] == 0
    assert len(participant["rounds"]) == 2
    assert participant["half_rate"]["rate_limit_per_s"] == participant["throughput_per_s"] / 2


def test_tune_workers_sweeps_counts_writes_table_files_and_recommends(tmp_path):
    completed = run(
        "loadtest.tune", "--max-workers", "2", "--duration", "0.5", "--mode", "post-participant",
        "--concurrency", "2", "--p99-limit-ms", "100000", "--out", str(tmp_path),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "recommended: FEED_WORKERS=" in completed.stdout
    with (tmp_path / "tune.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["workers"] for row in rows] == ["1", "2"]
    document = orjson.loads((tmp_path / "tune.json").read_bytes())
    assert document["recommended_workers"] in (1, 2)
    assert [row["workers"] for row in document["rows"]] == [1, 2]
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "tune.png").read_bytes().startswith(b"\x89PNG")
    else:
        assert "matplotlib is not installed" in completed.stdout


def test_tune_workers_open_loop_holds_the_rate_for_each_count(tmp_path):
    completed = run(
        "loadtest.tune", "--max-workers", "1", "--duration", "1", "--mode", "get-participant",
        "--concurrency", "2", "--rate", "40", "--p99-limit-ms", "100000", "--out", str(tmp_path),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "open loop at 40 req/s" in completed.stdout
    (run_document,) = orjson.loads((tmp_path / "tune.json").read_bytes())["runs"]
    assert run_document["loop"] == "open"
    assert run_document["operations"][-1]["requests"] == 40


def test_sweep_measures_the_maximum_then_open_loop_fractions_of_it(tmp_path):
    completed = run(
        "loadtest.sweep", "--mode", "hello", "--workers", "1", "--duration", "1",
        "--concurrency", "2", "--fractions", "10,50", "--out", str(tmp_path),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    document = orjson.loads((tmp_path / "sweep.json").read_bytes())
    maximum = document["maximum"]["operations"][-1]["requests"]
    assert document["maximum"]["loop"] == "closed" and maximum > 0
    assert [step["percent_of_max"] for step in document["steps"]] == [10.0, 50.0]
    for step in document["steps"]:
        assert step["loop"] == "open"
        assert step["rate_limit_per_s"] == step["offered_per_s"]
        assert {"p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"} <= set(step["operations"][-1])
        assert len(step["per_second"]) == 1
    assert (tmp_path / "sweep-50.hgrm").read_text().startswith("       Value")
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG")


def test_bench_puts_remote_mariadb_links_beside_sqlite(tmp_path, needs_mariadbd):
    report = tmp_path / "bench.json"
    completed = run(
        "loadtest.bench", "--workers", "1", "--rounds", "1", "--duration", "0.5",
        "--concurrency", "2", "--operations", "get-participant", "--db-rtt-ms", "0,2",
        "--no-half-rate", "--json", str(report),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    pairs = orjson.loads(report.read_bytes())["pairs"]
    assert [pair["backend"] for pair in pairs] == [
        "sqlite (embedded)", "mariadb rtt 0ms", "mariadb rtt 2ms",
    ]  # fmt: skip
    for pair in pairs:
        assert pair["errors"] == 0 and pair["throughput_per_s"] > 0
        assert pair["worker_cpu_us_per_request_median"] > 0
    assert pairs[0]["proxy_cpu_share"] is None
    assert all(pair["proxy_cpu_share"] is not None for pair in pairs[1:])
    # Every GET makes at least one round trip over the 2 ms link (a lower bound: load only adds).
    assert pairs[2]["p50_ms_median"] >= 2.0
    assert "measured ping" in completed.stderr


def test_bench_boots_a_baseline_build_beside_this_one(tmp_path):
    report = tmp_path / "bench.json"
    completed = run(
        "loadtest.bench", "--workers", "1", "--rounds", "1", "--duration", "0.5",
        "--concurrency", "2", "--operations", "get-participant", "--no-half-rate",
        "--baseline", str(REPO_ROOT), "--json", str(report),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    revision = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    pairs = orjson.loads(report.read_bytes())["pairs"]
    assert [pair["backend"] for pair in pairs] == [
        "sqlite (embedded)",
        f"sqlite (embedded) @{revision}",
    ]
    assert all(pair["throughput_per_s"] > 0 and pair["errors"] == 0 for pair in pairs)


def test_bench_refuses_a_baseline_without_its_virtualenv(tmp_path):
    completed = run("loadtest.bench", "--baseline", str(tmp_path), "--operations", "hello")
    assert completed.returncode != 0
    assert "has no .venv: run its scripts/setup first" in completed.stderr


def test_bench_serves_a_private_primary_with_0_and_1_replica(tmp_path, needs_mariadbd):
    report = tmp_path / "bench.json"
    completed = run(
        "loadtest.bench", "--workers", "1", "--rounds", "1", "--duration", "0.5",
        "--concurrency", "2", "--operations", "get-participant", "--replicas", "0,1",
        "--no-half-rate", "--json", str(report),
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    pairs = orjson.loads(report.read_bytes())["pairs"]
    assert [pair["backend"] for pair in pairs] == [
        "sqlite (embedded)", "mariadb 0 replicas", "mariadb 1 replica",
    ]  # fmt: skip
    assert all(pair["errors"] == 0 and pair["throughput_per_s"] > 0 for pair in pairs)
    without, with_replica = pairs[1]["statements_per_request"], pairs[2]["statements_per_request"]
    # One SELECT per read, on the primary alone, then on the replica; the replica checks of the
    # server with the replica, booted beside, add a little to both rounds.
    assert without["replica"][0] < 0.1 and 0.9 < without["primary"][0] < 1.5
    assert with_replica["primary"][0] < 0.5 and 0.9 < with_replica["replica"][0] < 1.5
    assert "replica stmts/req" in completed.stdout

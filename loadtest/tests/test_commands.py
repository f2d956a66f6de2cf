"""The benchmark and tuning commands run end to end on tiny settings (real gunicorn servers)."""

import csv
import importlib.util
import subprocess
import sys

import orjson

from loadtest.server import REPO_ROOT


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

"""loadtest.bench_proxy runs end to end on tiny settings: real gunicorn, real nginx in front."""

import subprocess
import sys

import orjson
import pytest

from loadtest.harness.gunicorn import REPO_ROOT
from tests.support.nginx import nginx_binary

# They boot gunicorn through the benchmark harness: process tests.
pytestmark = pytest.mark.process


def test_bench_proxy_reports_both_paths_with_cpu_per_request(tmp_path):
    nginx_binary()
    report = tmp_path / "bench.json"
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "loadtest.bench_proxy", "--workers", "1", "--rounds", "2"),
            *("--duration", "1", "--concurrency", "2", "--operations", "get-participant"),
            *("--json", str(report)),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert completed.returncode == 0, completed.stderr
    assert "x direct" in completed.stdout
    lines = {line["path"]: line for line in orjson.loads(report.read_bytes())["lines"]}
    assert set(lines) == {"direct", "nginx"}
    for line in lines.values():
        assert line["errors"] == 0 and len(line["rounds"]) == 2
        assert line["app_cpu_us_per_request"] > 0
    assert lines["nginx"]["nginx_cpu_us_per_request"] > 0

"""Schemathesis over the served /openapi.json: the document says exactly what the service accepts.

Stateless (examples, coverage, fuzzing) and stateful phases, every check, against the deployment:
nginx in front of a real gunicorn, on SQLite and on MariaDB.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from loadtest.harness.gunicorn import REPO_ROOT, GunicornServer
from loadtest.harness.mariadb import ReplicatedMariadb
from tests.support.nginx import NginxProxy

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# Bounded so one run takes well under a minute; the seed makes a failure reproducible.
MAX_EXAMPLES = 25
SEED = 1
RUN_DEADLINE_SECONDS = 600
HOOKS = "tests.support.schemathesis_checks"


def test_schemathesis_finds_nothing_the_document_does_not_allow(
    tmp_path: Path, database_url: str, gunicorn_server: GunicornServer
) -> None:
    schemathesis_finds_nothing(tmp_path, {"FEED_DATABASE_URL": database_url}, gunicorn_server)


def test_schemathesis_finds_nothing_with_a_read_replica(
    tmp_path: Path, replicated_mariadb: ReplicatedMariadb, gunicorn_server: GunicornServer
) -> None:
    """The same with reads routed to a replica, and any Feed-Position Schemathesis can send."""
    env = {
        "FEED_DATABASE_URL": replicated_mariadb.primary.url,
        "FEED_DATABASE_REPLICA_URLS": replicated_mariadb.replica.url,
    }
    schemathesis_finds_nothing(tmp_path, env, gunicorn_server)


def schemathesis_finds_nothing(
    tmp_path: Path, env: dict[str, str], gunicorn_server: GunicornServer
) -> None:
    gunicorn_server.start(env, workers=2)
    gunicorn_server.wait_ready(workers=2)
    # Schemathesis runs requests side by side: a per-client share well above its concurrency.
    proxy = NginxProxy(tmp_path, f"127.0.0.1:{gunicorn_server.port}", connections_per_client=256)
    try:
        proxy.start({})
        result = subprocess.run(
            [
                *(str(SCHEMATHESIS), "run", f"http://127.0.0.1:{proxy.port}/openapi.json"),
                *(
                    "--checks",
                    "all",
                    "--exclude-checks",
                    "positive_data_acceptance,ensure_resource_availability",
                ),
                *("--phases", "examples,coverage,fuzzing,stateful"),
                *("--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED)),
                "--no-color",
            ],
            # Its cache (replayed crashes) stays in the test's own directory.
            cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": str(REPO_ROOT)},
            capture_output=True,
            text=True,
            timeout=RUN_DEADLINE_SECONDS,
        )
    finally:
        proxy.stop()

    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
    tally = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert tally and tally[1] == tally[2] and int(tally[1]) > 300, result.stdout
    stateful = re.search(r"Scenarios: +(\d+)", result.stdout)
    assert stateful and int(stateful[1]) > 0, result.stdout

"""The gunicorn master runs init-db itself on SQLite, before it forks: that must map no metrics
file, which a full filesystem could turn into a SIGBUS in the master (adapters/metrics_files.py)."""

import subprocess
import sys
from pathlib import Path

INIT_DB_AS_THE_MASTER_DOES = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from feedsvc.compose.schema import init_db
from feedsvc.core.config import Config
init_db(Config.from_env({"FEED_DATA_DIR": sys.argv[2]}))
"""


def test_init_db_in_the_master_creates_no_metrics_file(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    data_dir = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-c", INIT_DB_AS_THE_MASTER_DOES, str(metrics_dir), str(data_dir)],
        check=True,
        timeout=120,
    )
    assert (data_dir / "feed.db").exists()
    assert sorted(metrics_dir.iterdir()) == []

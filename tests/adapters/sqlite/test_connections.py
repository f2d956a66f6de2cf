"""What every SQLite connection of the service promises: WAL, durable commits, foreign keys."""

import pytest

from feedsvc.compose.schema import init_db
from feedsvc.core.config import Config, ConfigError
from feedsvc.db import engines

# PRAGMA synchronous reads back as a number.
SYNCHRONOUS_LEVELS = {"normal": 1, "full": 2}


def pragmas(environ: dict[str, str]) -> dict[str, object]:
    config = Config.from_env(environ)
    init_db(config)
    engine = engines.create_engine(config)
    try:
        with engine.connect() as conn:
            sqlite = conn.connection.driver_connection
            return {
                name: sqlite.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        engine.dispose()


def test_by_default_a_commit_is_on_disk_before_it_is_acknowledged(tmp_path):
    assert pragmas({"FEED_DATA_DIR": str(tmp_path)}) == {
        "journal_mode": "wal",
        "synchronous": SYNCHRONOUS_LEVELS["full"],
        "foreign_keys": 1,
        "busy_timeout": engines.SQLITE_BUSY_TIMEOUT_MS,
    }


@pytest.mark.parametrize("mode", ["normal", "full", "FULL"])
def test_the_operator_chooses_the_durability(tmp_path, mode):
    found = pragmas({"FEED_DATA_DIR": str(tmp_path), "FEED_SQLITE_SYNCHRONOUS": mode})
    assert found["synchronous"] == SYNCHRONOUS_LEVELS[mode.lower()]


def test_an_unknown_durability_names_the_variable():
    with pytest.raises(ConfigError, match="FEED_SQLITE_SYNCHRONOUS"):
        Config.from_env({"FEED_SQLITE_SYNCHRONOUS": "off"})

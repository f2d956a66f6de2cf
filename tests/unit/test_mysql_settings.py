"""Unit tests of the MySQL settings: the password's sources and masking, pool bounds, retries."""

import logging

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from feedsvc.core.config import Config, ConfigError
from feedsvc.db import engines, retries

URL = "mysql+mysqldb://feed@db.example:3306/feed"
SECRET = "s3cr3t-pa55"


def test_password_from_environment_is_used_but_never_shown():
    config = Config.from_env({"FEED_DATABASE_URL": URL, "FEED_DATABASE_PASSWORD": SECRET})

    assert engines.connect_url(config).password == SECRET
    assert SECRET not in repr(config)
    assert SECRET not in repr(engines.connect_url(config))
    assert SECRET not in config.database_url


def test_password_from_file_drops_the_trailing_newline(tmp_path):
    secret_file = tmp_path / "db-password"
    secret_file.write_text(SECRET + "\n")

    config = Config.from_env(
        {"FEED_DATABASE_URL": URL, "FEED_DATABASE_PASSWORD_FILE": str(secret_file)}
    )

    assert engines.connect_url(config).password == SECRET


@pytest.mark.parametrize(
    "url",
    ["mysql+mysqldb://feed@db/feed", "mysql://feed@db/feed", "mariadb+mysqldb://feed@db/feed"],
)
def test_mysql_urls_through_mysqlclient_are_accepted(url):
    assert Config.from_env({"FEED_DATABASE_URL": url}).database_url == url


def test_no_password_connects_without_one():
    config = Config.from_env({"FEED_DATABASE_URL": URL})

    assert config.database_password is None
    assert engines.connect_url(config).password is None


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        (
            {"FEED_DATABASE_PASSWORD": SECRET, "FEED_DATABASE_PASSWORD_FILE": "/etc/feed/pw"},
            "FEED_DATABASE_PASSWORD_FILE",
        ),
        ({"FEED_DATABASE_PASSWORD_FILE": "/nonexistent/feed-pw"}, "FEED_DATABASE_PASSWORD_FILE"),
        (
            {
                "FEED_DATABASE_URL": f"mysql+mysqldb://feed:{SECRET}@db/feed",
                "FEED_DATABASE_PASSWORD": "x",
            },
            "FEED_DATABASE_URL",
        ),
        ({"FEED_DATABASE_URL": f"not a url {SECRET}"}, "FEED_DATABASE_URL"),
        ({"FEED_DATABASE_URL": f"postgresql://u:{SECRET}@db/feed"}, "FEED_DATABASE_URL"),
        ({"FEED_DATABASE_URL": f"mysql+pymysql://u:{SECRET}@db/feed"}, "FEED_DATABASE_URL"),
        ({"FEED_DB_POOL_SIZE": "0"}, "FEED_DB_POOL_SIZE"),
        ({"FEED_DB_MAX_OVERFLOW": "-1"}, "FEED_DB_MAX_OVERFLOW"),
        ({"FEED_DB_POOL_TIMEOUT": "soon"}, "FEED_DB_POOL_TIMEOUT"),
        ({"FEED_DB_POOL_RECYCLE": "0"}, "FEED_DB_POOL_RECYCLE"),
        ({"FEED_DB_CONNECT_TIMEOUT": "0.5"}, "FEED_DB_CONNECT_TIMEOUT"),
        ({"FEED_DB_READ_TIMEOUT": "1"}, "FEED_DB_READ_TIMEOUT"),
    ],
)
def test_bad_database_settings_name_the_variable_and_hide_the_secret(environ, named):
    with pytest.raises(ConfigError, match=named) as raised:
        Config.from_env(environ)

    assert SECRET not in str(raised.value)


def test_engine_pool_is_bounded_and_recycled_without_a_ping_or_reset_round_trip(caplog):
    caplog.set_level(logging.INFO, logger="feedsvc.db.engines")
    config = Config.from_env(
        {
            "FEED_DATABASE_URL": URL,
            "FEED_DATABASE_PASSWORD": SECRET,
            "FEED_DB_POOL_SIZE": "3",
            "FEED_DB_MAX_OVERFLOW": "2",
            "FEED_DB_POOL_TIMEOUT": "0.5",
            "FEED_DB_POOL_RECYCLE": "600",
        }
    )

    engine = engines.create_engine(config)  # builds the pool; connects only on first use
    try:
        assert engine.pool.size() == 3
        assert engine.pool._max_overflow == 2
        assert engine.pool.timeout() == 0.5
        assert engine.pool._recycle == 600
        assert engine.pool._pre_ping is False
        assert engine.pool._reset_on_return is sa.pool.reset_none
    finally:
        engine.dispose()
    assert "db.example" in caplog.text
    assert SECRET not in caplog.text


class FakeDriverError(Exception):
    """What mysqlclient raises: args are (error code, message)."""


def failing(*codes: int):
    """A write that fails with the given MySQL error codes in turn, then succeeds."""
    calls = []

    @retries.retry_transaction
    def write() -> str:
        calls.append(len(calls))
        if len(calls) <= len(codes):
            code = codes[len(calls) - 1]
            raise OperationalError("INSERT ...", {}, FakeDriverError(code, "conflict"))
        return "committed"

    return write, calls


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(retries, "CONFLICT_BACKOFF_S", 0.0)


@pytest.mark.parametrize("code", [1213, 1205])  # deadlock, lock wait timeout
def test_lock_conflicts_are_retried_until_the_write_commits(code):
    write, calls = failing(code, code)

    assert write() == "committed"
    assert len(calls) == 3


def test_lock_conflict_retries_are_bounded():
    write, calls = failing(*[1213] * 10)

    with pytest.raises(OperationalError):
        write()
    assert len(calls) == retries.CONFLICT_ATTEMPTS


def test_other_database_errors_are_not_retried():
    write, calls = failing(2003)  # can't connect: a 503 at once, not a retry loop

    with pytest.raises(OperationalError):
        write()
    assert len(calls) == 1


def test_the_tests_reach_mariadb_as_a_user_with_a_password_and_no_global_grant(mariadb_server):
    """scripts/ensure-mariadb's test user: never a passwordless root that may grant anything."""
    engine = sa.create_engine(mariadb_server, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            grants = list(conn.exec_driver_sql("SHOW GRANTS").scalars())
    finally:
        engine.dispose()

    assert mariadb_server.password
    assert mariadb_server.username != "root"
    assert not [grant for grant in grants if " ON *.* " in grant and "GRANT OPTION" in grant]
    assert not [grant for grant in grants if grant.startswith("GRANT ALL PRIVILEGES ON *.*")]

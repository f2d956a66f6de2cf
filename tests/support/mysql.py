"""MariaDB fixtures: a fresh database on the shared server, and private servers to break."""

from __future__ import annotations

import configparser
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from feedsvc.compose.schema import init_db
from feedsvc.core.config import Config
from feedsvc.db import tables
from loadtest.harness.mariadb import (
    COMMAND_COUNTERS,
    INSTALL_DB,
    MARIADBD,
    PrivateMariadb,
    ReplicatedMariadb,
    client_commands,
    mariadb_installed,
)
from tests.support.unavailable import unavailable

# The shared server's test user, which scripts/ensure-mariadb creates: its password lives in this
# option file only (never on a command line), and it may use databases named feedsvc_* only.
TEST_OPTION_FILE = Path(
    os.environ.get("FEED_TEST_MARIADB_CNF")
    or Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    / "feedsvc"
    / "test-mariadb.cnf"
)


def shared_server_url() -> str | None:
    """FEED_TEST_MARIADB_URL, else the test user's URL from its option file (None: no file)."""
    if url := os.environ.get("FEED_TEST_MARIADB_URL"):
        return url
    options = configparser.ConfigParser(interpolation=None)
    if not options.read(TEST_OPTION_FILE):
        return None
    client = options["client"]
    return URL.create(
        "mysql+mysqldb",
        username=client["user"],
        password=client["password"],
        host=client.get("host", "127.0.0.1"),
        port=int(client.get("port", "3306")),
    ).render_as_string(hide_password=False)


SHARED_SERVER_URL = shared_server_url()


def mariadb_unavailable(reason: str) -> NoReturn:
    unavailable("MariaDB", f"{reason}; run scripts/ensure-mariadb")


def server_url(database_name: str | None = None) -> URL:
    if SHARED_SERVER_URL is None:
        mariadb_unavailable(f"no test user: {TEST_OPTION_FILE} is missing")
    return make_url(SHARED_SERVER_URL).set(database=database_name)


@pytest.fixture(scope="session")
def mariadb_server() -> URL:
    """The shared server's URL, once it has answered; fail (CI) or skip when it does not."""
    url = server_url()
    engine = sa.create_engine(url, connect_args={"connect_timeout": 2}, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as error:
        mariadb_unavailable(f"cannot connect to {url!r}: {getattr(error, 'orig', error)}")
    finally:
        engine.dispose()
    return url


@pytest.fixture(scope="session")
def mariadb_database(mariadb_server: URL) -> Iterator[str]:
    """This session's own database on the shared server: initialised, dropped at the end."""
    name = f"feedsvc_mysql_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(mariadb_server, poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    url = server_url(name).render_as_string(hide_password=False)
    try:
        init_db(Config.from_env({"FEED_DATABASE_URL": url}))
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


def fulltext_min_token_size(url: str) -> int:
    """Words shorter than this are not in an InnoDB FULLTEXT index (server setting, default 3)."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT @@innodb_ft_min_token_size").scalar_one())
    finally:
        engine.dispose()


def empty_tables(url: str) -> None:
    """Start a test from empty tables, ids from 1, whatever the previous test left."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET SESSION foreign_key_checks = 0")
            # TRUNCATE rebuilds the FULLTEXT index with this session's stopword setting.
            conn.exec_driver_sql("SET SESSION innodb_ft_enable_stopword = OFF")
            for table in reversed(tables.metadata.sorted_tables):
                conn.exec_driver_sql(f"TRUNCATE TABLE {table.name}")
    finally:
        engine.dispose()


@pytest.fixture
def mariadb_url(mariadb_database: str) -> str:
    """The session's MariaDB database, emptied for this test."""
    empty_tables(mariadb_database)
    return mariadb_database


@pytest.fixture(params=["sqlite", "mariadb"])
def database_url(request: pytest.FixtureRequest) -> str:
    """FEED_DATABASE_URL for each backend the API must behave the same on ("" = embedded SQLite)."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("mariadb_url")


@pytest.fixture
def needs_mariadbd() -> None:
    """A test that starts private servers itself (a benchmark command) needs mariadbd here."""
    if not mariadb_installed():
        mariadb_unavailable(f"{MARIADBD} or {INSTALL_DB} is not installed")


@pytest.fixture
def private_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariadb]:
    """A running private server with the feed schema; the test may stop and restart it."""
    if not mariadb_installed():
        mariadb_unavailable(f"{MARIADBD} or {INSTALL_DB} is not installed")
    server = PrivateMariadb(tmp_path_factory.mktemp("mariadbd"))
    server.install()
    server.start()
    try:
        init_db(Config.from_env({"FEED_DATABASE_URL": server.url}))
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture
def replicated_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedMariadb]:
    """A private primary with the feed schema and a replica that has applied it (GTID)."""
    if not mariadb_installed():
        mariadb_unavailable(f"{MARIADBD} or {INSTALL_DB} is not installed")
    pair = ReplicatedMariadb(tmp_path_factory.mktemp("replicated"))
    try:
        pair.start()
        init_db(Config.from_env({"FEED_DATABASE_URL": pair.primary.url}))
        pair.wait_replicated()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(pair.base_dir, ignore_errors=True)


def kill_connections(url: str) -> int:
    """KILL, from another session, every other connection to the URL's database (what an
    operator, wait_timeout or a failover does to a service's idle connections); how many."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            ids = conn.exec_driver_sql(
                "SELECT id FROM information_schema.processlist"
                " WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            ).scalars()
            killed = 0
            for connection_id in ids:
                conn.exec_driver_sql(f"KILL CONNECTION {int(connection_id)}")
                killed += 1
            return killed
    finally:
        engine.dispose()


class RoundTrips:
    """Commands a quiet server received from clients: statements (Questions) plus pings, read
    from the global status counters by a session of its own, its own statements left out."""

    def __init__(self, url: str) -> None:
        self._engine = sa.create_engine(url, poolclass=sa.NullPool)
        self._conn = self._engine.connect()

    def total(self) -> int:
        return client_commands(dict(self._conn.exec_driver_sql(COMMAND_COUNTERS).all()))

    def close(self) -> None:
        self._conn.close()
        self._engine.dispose()


def set_wait_timeout(url: str, seconds: int) -> None:
    """The server closes connections idle this long; connections made from now on."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"SET GLOBAL wait_timeout = {int(seconds)}")
    finally:
        engine.dispose()


def row_count(url: str, table: sa.Table) -> int:
    """Rows in a table, counted on a connection of the test's own."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    finally:
        engine.dispose()

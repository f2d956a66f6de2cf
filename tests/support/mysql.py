"""MariaDB fixtures: a fresh database on the shared server, and private servers to break."""

from __future__ import annotations

import configparser
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from feedsvc import database, schema
from feedsvc.config import Config

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
MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "mariadb-install-db"
# A small server: the tests need correctness, not a buffer pool.
SMALL_SERVER_OPTIONS = ("--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M")
START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0
CREATE_FEED_DATABASE = "CREATE DATABASE IF NOT EXISTS feed CHARACTER SET utf8mb4"


def mariadb_unavailable(reason: str) -> None:
    """CI must have MariaDB, so there it fails; a developer without it gets a skip that says why."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"MariaDB required in CI: {reason}", pytrace=False)
    pytest.skip(f"MariaDB not available ({reason}); run scripts/ensure-mariadb")


def server_url(database_name: str | None = None) -> URL:
    if SHARED_SERVER_URL is None:
        mariadb_unavailable(f"no test user: {TEST_OPTION_FILE} is missing")
    return make_url(SHARED_SERVER_URL).set(database=database_name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
        database.init_db(Config.from_env({"FEED_DATABASE_URL": url}))
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
            for table in reversed(schema.metadata.sorted_tables):
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


class PrivateMariadb:
    """A mariadbd of one test's own, on a free port and a temporary data directory."""

    def __init__(self, base_dir: Path) -> None:
        self.data_dir = base_dir / "data"
        self.log_path = base_dir / "mariadbd.log"
        self.socket_path = base_dir / "mariadbd.sock"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mysql+mysqldb://root@127.0.0.1:{self.port}/feed"

    def install(self) -> None:
        subprocess.run(
            [
                INSTALL_DB,
                "--no-defaults",
                f"--datadir={self.data_dir}",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
                f"--user={_user()}",
                *SMALL_SERVER_OPTIONS,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            timeout=120,
        )

    def start(self) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                MARIADBD,
                "--no-defaults",
                f"--datadir={self.data_dir}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.socket_path}",
                f"--user={_user()}",
                "--skip-grant-tables",
                "--skip-log-bin",
                f"--log-error={self.log_path}",
                f"--pid-file={self.data_dir / 'mariadbd.pid'}",
                *SMALL_SERVER_OPTIONS,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until_answering()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: clean shutdown; SIGKILL: a crash) and wait until it has exited."""
        if self.process is None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def _wait_until_answering(self) -> None:
        engine = sa.create_engine(
            self.url.rsplit("/", 1)[0], connect_args={"connect_timeout": 1}, poolclass=sa.NullPool
        )
        deadline = time.monotonic() + START_DEADLINE_S
        try:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"mariadbd exited: {self._log_tail()}")
                try:
                    with engine.connect() as conn:
                        conn.exec_driver_sql(CREATE_FEED_DATABASE)
                    return
                except sa.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"mariadbd not answering: {self._log_tail()}") from None
                    time.sleep(0.1)
        finally:
            engine.dispose()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


def _user() -> str:
    """mariadbd refuses to run as root unless told to, and then runs as the current user."""
    return pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def private_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariadb]:
    """A running private server with the feed schema; the test may stop and restart it."""
    if shutil.which(INSTALL_DB) is None or not Path(MARIADBD).exists():
        mariadb_unavailable(f"{MARIADBD} or {INSTALL_DB} is not installed")
    server = PrivateMariadb(tmp_path_factory.mktemp("mariadbd"))
    server.install()
    server.start()
    try:
        database.init_db(Config.from_env({"FEED_DATABASE_URL": server.url}))
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)

"""A private mariadbd (free port, temporary data directory) for benchmarks and tests; no pytest."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Self

import MySQLdb
import sqlalchemy as sa

from loadtest.harness.ports import free_port
from loadtest.harness.process import stop_process

MARIADBD = "/usr/sbin/mariadbd"
INSTALL_DB = "mariadb-install-db"
# A small server: the tests need correctness, not a buffer pool.
SMALL_SERVER_OPTIONS = ("--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M")
# A benchmark's server keeps its working set in memory, as a production one does.
BENCH_SERVER_OPTIONS = ("--innodb-buffer-pool-size=256M", "--innodb-log-file-size=64M")
START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0
CREATE_FEED_DATABASE = "CREATE DATABASE IF NOT EXISTS feed CHARACTER SET utf8mb4"
# What clients sent a server: statements (Questions) plus pings (Com_admin_commands); each SHOW
# STATUS that reads them is one of the Questions, left out by client_commands.
COMMAND_COUNTERS = (
    "SHOW GLOBAL STATUS WHERE Variable_name IN"
    " ('Questions', 'Com_admin_commands', 'Com_show_status')"
)


def client_commands(counters: Mapping[str, object]) -> int:
    """Statements plus pings from COMMAND_COUNTERS' rows, the SHOW STATUS statements left out."""
    return (
        int(str(counters["Questions"]))
        + int(str(counters["Com_admin_commands"]))
        - int(str(counters["Com_show_status"]))
    )


def mariadb_installed() -> bool:
    return shutil.which(INSTALL_DB) is not None and Path(MARIADBD).exists()


class PrivateMariadb:
    """A mariadbd of its own, on a free port and a temporary data directory."""

    def __init__(self, base_dir: Path, options: Sequence[str] = SMALL_SERVER_OPTIONS) -> None:
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.log_path = base_dir / "mariadbd.log"
        self.socket_path = base_dir / "mariadbd.sock"
        self.options = tuple(options)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.database_url("feed")

    def database_url(self, database: str, port: int | None = None) -> str:
        """The URL of one database here, optionally through another port (a proxy's)."""
        return f"mysql+mysqldb://root@127.0.0.1:{port or self.port}/{database}"

    def install(self) -> None:
        subprocess.run(
            [
                INSTALL_DB,
                "--no-defaults",
                f"--datadir={self.data_dir}",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
                f"--user={_user()}",
                *self.options,
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
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until_answering()

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop it (SIGTERM: clean shutdown; SIGKILL: a crash) and wait until it has exited."""
        if self.process is None:
            return
        stop_process(self.process, sig, STOP_DEADLINE_S)
        self.process = None

    def commands_received(self) -> int:
        """client_commands() of this server now, read on a connection that sends nothing else."""
        connection = MySQLdb.connect(host="127.0.0.1", port=self.port, user="root")
        try:
            cursor = connection.cursor()
            cursor.execute(COMMAND_COUNTERS)
            return client_commands(dict(cursor.fetchall()))
        finally:
            connection.close()

    def create_database(self, name: str) -> str:
        """An empty utf8mb4 database (dropped first if it exists); returns its URL."""
        engine = sa.create_engine(self.database_url(""), poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
                conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        finally:
            engine.dispose()
        return self.database_url(name)

    def _wait_until_answering(self) -> None:
        engine = sa.create_engine(
            self.database_url(""), connect_args={"connect_timeout": 1}, poolclass=sa.NullPool
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


class InScratchDirectory:
    """Servers in a directory of their own: brought up on entry, stopped and removed on exit."""

    base_dir: Path
    stop: Callable[[], None]  # the server class's own

    def bring_up(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        if not mariadb_installed():
            shutil.rmtree(self.base_dir, ignore_errors=True)
            raise RuntimeError(f"{MARIADBD} or {INSTALL_DB} missing; run scripts/ensure-mariadb")
        try:
            self.bring_up()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


class ScratchMariadb(InScratchDirectory, PrivateMariadb):
    """A private server in a directory of its own, installed, started, stopped and removed."""

    def __init__(self, options: Sequence[str] = BENCH_SERVER_OPTIONS) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="feedsvc-mariadbd-")), options)

    def bring_up(self) -> None:
        self.install()
        self.start()


def _user() -> str:
    """mariadbd refuses to run as root unless told to, and then runs as the current user."""
    return pwd.getpwuid(os.getuid()).pw_name


# GTID replication: the primary writes a row-based binary log; the replica applies it.
PRIMARY_OPTIONS = ("--log-bin=primary-bin", "--server-id=1", "--binlog-format=ROW")
REPLICA_OPTIONS = ("--server-id=2", "--relay-log=replica-relay")
REPLICATION_DEADLINE_S = 30


class ReplicatedMariadb:
    """A private primary and one replica of it (MariaDB GTID replication), each on a free port."""

    def __init__(self, base_dir: Path, options: Sequence[str] = SMALL_SERVER_OPTIONS) -> None:
        (base_dir / "primary").mkdir(parents=True, exist_ok=True)
        (base_dir / "replica").mkdir(parents=True, exist_ok=True)
        self.base_dir = base_dir
        self.primary = PrivateMariadb(base_dir / "primary", (*options, *PRIMARY_OPTIONS))
        self.replica = PrivateMariadb(base_dir / "replica", (*options, *REPLICA_OPTIONS))

    def start(self) -> None:
        """Install and start both, then replicate everything the primary writes from now on."""
        for server in (self.primary, self.replica):
            server.install()
            server.start()
        # The replica made its own `feed` database at start; the primary's log starts empty.
        self.run(self.primary, "RESET MASTER")
        self.run(
            self.replica,
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_USER = 'root',"
            f" MASTER_PORT = {self.primary.port}, MASTER_CONNECT_RETRY = 1,"
            " MASTER_USE_GTID = slave_pos",
        )
        self.run(self.replica, "START SLAVE")

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()

    def wait_replicated(self) -> None:
        """Block until the replica has applied everything the primary has committed."""
        (position,) = self.run(self.primary, "SELECT @@gtid_binlog_pos")
        (reached,) = self.run(
            self.replica,
            f"SELECT MASTER_GTID_WAIT('{position}', {REPLICATION_DEADLINE_S})",
        )
        if reached != 0:
            raise RuntimeError(f"replica did not reach {position} in {REPLICATION_DEADLINE_S} s")

    def pause_applying(self) -> None:
        """The replica keeps receiving the primary's log but applies nothing: it falls behind."""
        self.run(self.replica, "STOP SLAVE SQL_THREAD")

    def resume_applying(self) -> None:
        self.run(self.replica, "START SLAVE SQL_THREAD")

    @staticmethod
    def run(server: PrivateMariadb, sql: str) -> tuple[object, ...]:
        """One administrative statement on a server; its first row, if it returns any."""
        engine = sa.create_engine(server.database_url(""), poolclass=sa.NullPool)
        try:
            with engine.connect() as conn:
                result = conn.exec_driver_sql(sql)
                row = result.first() if result.returns_rows else None
                conn.commit()
                return tuple(row) if row is not None else ()
        finally:
            engine.dispose()


class ScratchReplicatedMariadb(InScratchDirectory, ReplicatedMariadb):
    """A primary and a replica in a directory of their own, started, stopped and removed."""

    def __init__(self, options: Sequence[str] = BENCH_SERVER_OPTIONS) -> None:
        super().__init__(Path(tempfile.mkdtemp(prefix="feedsvc-replicated-")), options)

    def bring_up(self) -> None:
        self.start()

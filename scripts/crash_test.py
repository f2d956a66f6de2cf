"""Crash consistency: posts under load, kill -9 at a random moment, restart, count what survived.

Each run starts the service (gunicorn, config/gunicorn.conf.py) on a fresh SQLite data directory
or a private mariadbd, makes participants with friends, then posts from several client threads
(no retries) until SIGKILL hits every gunicorn process at once, or mariadbd. After a restart it
counts, from the database: acknowledged posts (200 answers), lost (acknowledged, not stored),
duplicated (stored more than once), partial fan-outs (a post whose inbound rows are not exactly
its sender's friends) and stored without an answer (committed, the answer lost: the case that
Idempotency-Key makes safe to retry). Run by scripts/crash-test.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from feedsvc.compose.schema import init_db  # noqa: E402
from feedsvc.core.config import Config  # noqa: E402
from loadtest.harness.gunicorn import GUNICORN, child_pids  # noqa: E402
from loadtest.harness.mariadb import PrivateMariadb  # noqa: E402
from loadtest.harness.ports import free_port  # noqa: E402

PARTICIPANTS = 12
FRIENDS_EACH = 3
READY_DEADLINE_S = 60.0


@dataclass
class Tally:
    runs: int = 0
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    partial_fan_outs: int = 0
    stored_unanswered: int = 0
    integrity: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.runs += other.runs
        self.acknowledged += other.acknowledged
        self.lost += other.lost
        self.duplicated += other.duplicated
        self.partial_fan_outs += other.partial_fan_outs
        self.stored_unanswered += other.stored_unanswered
        self.integrity += other.integrity


class Service:
    """gunicorn as production runs it, on a free port."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self._env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FEED_")},
            **env,
            "FEED_BIND": f"127.0.0.1:{self.port}",
            "FEED_WORKERS": "2",
        }
        self._log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(GUNICORN), "--config", str(REPO_ROOT / "config" / "gunicorn.conf.py")],
                cwd=REPO_ROOT,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        give_up = time.monotonic() + READY_DEADLINE_S
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"the service did not start; see {self._log_path}")
            time.sleep(0.1)

    def kill_everything(self) -> None:
        """SIGKILL to the master and every worker at once: no process gets to clean up."""
        assert self.process is not None
        for pid in [self.process.pid, *child_pids(self.process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            workers = child_pids(self.process.pid)
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill_everything()
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            payload = orjson.dumps(body) if body is not None else None
            headers = {"Content-Type": "application/json"} if body is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def _ready(self) -> bool:
        try:
            return self.request("GET", "/ready")[0] == 200
        except OSError:
            return False


def make_friends(service: Service) -> None:
    for number in range(PARTICIPANTS):
        status, _ = service.request("POST", "/participant", {"name": f"p{number}"})
        assert status == 200
    for number in range(1, PARTICIPANTS + 1):
        for step in range(1, FRIENDS_EACH + 1):
            friend = (number + step - 1) % PARTICIPANTS + 1
            if friend != number:
                service.request("POST", f"/participant/{number}/friends", {"to": friend})


def post_until_killed(service: Service, run: str, clients: int, stop: threading.Event) -> set[str]:
    """Stories answered 200; every story is unique, so the database can be checked for each."""
    acknowledged: set[str] = set()
    lock = threading.Lock()

    def client(number: int) -> None:
        sequence = 0
        while not stop.is_set():
            sequence += 1
            story = f"crash {run} client {number} post {sequence}"
            sender = random.randint(1, PARTICIPANTS)
            try:
                status, _ = service.request(
                    "POST", f"/participant/{sender}/outbound", {"subject": "s", "story": story}
                )
            except (OSError, http.client.HTTPException):
                time.sleep(0.05)
                continue
            if status == 200:
                with lock:
                    acknowledged.add(story)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(30)
    return acknowledged


def count(url: str, run: str, acknowledged: set[str]) -> Tally:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            stories = Counter(
                conn.exec_driver_sql(
                    "SELECT story FROM outbound WHERE story LIKE %s"
                    if "mysql" in url
                    else "SELECT story FROM outbound WHERE story LIKE ?",
                    (f"crash {run} %",),
                ).scalars()
            )
            friends = Counter()
            for low, high in conn.exec_driver_sql("SELECT low_id, high_id FROM friendship"):
                friends[low] += 1
                friends[high] += 1
            fan_outs = conn.exec_driver_sql(
                "SELECT o.sender_id, COUNT(i.recipient_id) FROM outbound o"
                " LEFT JOIN inbound i ON i.outbound_id = o.id GROUP BY o.id, o.sender_id"
            ).all()
            integrity = []
            if "sqlite" in url:
                integrity = [row[0] for row in conn.exec_driver_sql("PRAGMA integrity_check")]
    finally:
        engine.dispose()
    return Tally(
        runs=1,
        acknowledged=len(acknowledged),
        lost=sum(1 for story in acknowledged if stories[story] == 0),
        duplicated=sum(copies - 1 for copies in stories.values() if copies > 1),
        partial_fan_outs=sum(1 for sender, rows in fan_outs if rows != friends[sender]),
        stored_unanswered=sum(1 for story in stories if story not in acknowledged),
        integrity=[line for line in integrity if line != "ok"],
    )


def one_run(backend: str, target: str, number: int, clients: int, work: Path) -> Tally:
    """One kill: `target` is `service` (every gunicorn process) or `database` (mariadbd)."""
    run = f"{backend}-{target}-{number}-{time.time_ns()}"
    base = work / run
    base.mkdir()
    server = None
    env = {"FEED_DATA_DIR": str(base / "data"), "FEED_METRICS_DIR": str(base / "metrics")}
    url = f"sqlite:///{base / 'data' / 'feed.db'}"
    if backend == "mariadb":
        server = PrivateMariadb(base)
        server.install()
        server.start()
        url = server.url
        init_db(Config.from_env({"FEED_DATABASE_URL": url}))
        env["FEED_DATABASE_URL"] = url
    service = Service(env, base / "gunicorn.log")
    stop = threading.Event()

    def kill() -> None:
        if target == "database" and server is not None:
            server.stop(signal.SIGKILL)
        else:
            service.kill_everything()
        stop.set()

    try:
        service.start()
        make_friends(service)
        killer = threading.Timer(random.uniform(0.5, 3.0), kill)
        killer.start()
        acknowledged = post_until_killed(service, run, clients, stop)
        killer.join()
        if target == "database" and server is not None:
            server.start()
        else:
            service.start()
        wait_until_posting_works(service)
        return count(url, run, acknowledged)
    finally:
        service.stop()
        if server is not None:
            server.stop()


def wait_until_posting_works(service: Service) -> None:
    """After the restart the service must take posts again, by itself."""
    give_up = time.monotonic() + READY_DEADLINE_S
    body = {"subject": "s", "story": "after the crash"}
    while service.request("POST", "/participant/1/outbound", body)[0] != 200:
        if time.monotonic() > give_up:
            raise RuntimeError("the service did not take posts again after the restart")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--database", action="append", choices=("sqlite", "mariadb"), help="default: both"
    )
    parser.add_argument("--runs", type=int, default=5, help="kills per database and target")
    parser.add_argument("--clients", type=int, default=8, help="posting threads")
    args = parser.parse_args()
    plans = [("sqlite", "service"), ("mariadb", "service"), ("mariadb", "database")]
    plans = [plan for plan in plans if plan[0] in (args.database or ("sqlite", "mariadb"))]
    work = Path(tempfile.mkdtemp(prefix="feedsvc-crash-"))
    totals: dict[tuple[str, str], Tally] = {}
    try:
        for backend, target in plans:
            total = totals[backend, target] = Tally()
            for number in range(args.runs):
                result = one_run(backend, target, number, args.clients, work)
                total.add(result)
                print(f"{backend} kill -9 {target} run {number + 1}: {result}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("database  killed    runs  acknowledged  lost  duplicated  partial  stored-unanswered")
    failed = False
    for (backend, target), total in totals.items():
        print(
            f"{backend:9} {target:9} {total.runs:4} {total.acknowledged:13} {total.lost:5}"
            f" {total.duplicated:11} {total.partial_fan_outs:8} {total.stored_unanswered:18}"
        )
        failed |= bool(total.lost or total.duplicated or total.partial_fan_outs or total.integrity)
        for problem in total.integrity:
            print(f"  integrity_check: {problem}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

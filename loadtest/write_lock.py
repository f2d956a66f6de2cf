"""How long each SQLite write transaction holds its file's write lock, measured in-process.

Usage: .venv/bin/python -m loadtest.write_lock [--posts 5000] [--seed 1]
Builds the service as a worker does (its outbox relay included), posts stories of the load
test's dictionary through the app in one thread, and times every write transaction from its
BEGIN IMMEDIATE to the end of its COMMIT, per file and per thread (request or relay), in wall
time and in the holding thread's CPU time: on a busy machine the wall time also counts the
moments the thread was not running, the CPU time only the work done under the lock (such as an
FTS5 merge). Posts wait for the main database's lock, never for the search index's; the longest
hold is what a post queued behind it waits. It measures the feedsvc imported from the current
directory: run it from an older tree (with this loadtest/ copied in) to measure that version.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import falcon.testing

from feedsvc.compose.schema import init_db
from feedsvc.compose.service import build_service
from feedsvc.core.config import Config
from loadtest.report import format_table, percentile
from loadtest.scenarios import STORY_WORDS, SUBJECT_WORDS, link, words

PARTICIPANTS = 50
FRIENDS_EACH = 4

# (file name, thread kind, "wall" or "cpu") -> lock hold durations in milliseconds
_holds: defaultdict[tuple[str, str, str], list[float]] = defaultdict(list)
_holds_lock = threading.Lock()


class TimedConnection(sqlite3.Connection):
    """A sqlite3 connection that times its write transactions (BEGIN IMMEDIATE ... COMMIT)."""

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self.file_name = Path(database).name
        self.locked_at: float | None = None
        self.locked_cpu_at = 0.0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        cursor = super().execute(sql, *args)
        if sql == "BEGIN IMMEDIATE":
            self.locked_at = time.perf_counter()
            self.locked_cpu_at = time.thread_time()
        return cursor

    def commit(self) -> None:
        super().commit()
        self._unlocked()

    def rollback(self) -> None:
        super().rollback()
        self._unlocked()

    def _unlocked(self) -> None:
        if self.locked_at is None:
            return
        held_ms = (time.perf_counter() - self.locked_at) * 1000
        held_cpu_ms = (time.thread_time() - self.locked_cpu_at) * 1000
        self.locked_at = None
        thread = threading.current_thread().name
        kind = "relay" if thread.startswith("outbox-") else "request"
        with _holds_lock:
            _holds[(self.file_name, kind, "wall")].append(held_ms)
            _holds[(self.file_name, kind, "cpu")].append(held_cpu_ms)


def time_write_locks() -> None:
    """Make every SQLite connection opened from now on a TimedConnection."""
    connect = sqlite3.dbapi2.connect

    def timed_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(*args, **kwargs, factory=TimedConnection)

    sqlite3.dbapi2.connect = timed_connect


def post_stories(client: falcon.testing.TestClient, posts: int, rng: random.Random) -> None:
    ids = []
    for number in range(PARTICIPANTS):
        result = client.simulate_post("/participant", json={"name": f"writer {number}"})
        ids.append(result.json["id"])
    for position, sender in enumerate(ids):
        for step in range(1, FRIENDS_EACH // 2 + 1):
            friend = ids[(position + step) % len(ids)]
            client.simulate_post(f"{link(sender)}/friends", json={"to": link(friend)})
    for number in range(posts):
        story = {"subject": words(rng, SUBJECT_WORDS), "story": words(rng, STORY_WORDS)}
        result = client.simulate_post(f"{link(ids[number % len(ids)])}/outbound", json=story)
        if result.status_code != 200:
            raise SystemExit(f"post answered {result.status_code}: {result.text[:200]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    time_write_locks()
    with tempfile.TemporaryDirectory(prefix="feedsvc-write-lock-") as directory:
        config = Config.from_env({"FEED_DATA_DIR": directory})
        init_db(config)
        _holds.clear()  # the schema's creation is not a post
        service = build_service(config)
        client = falcon.testing.TestClient(service.app)
        try:
            started = time.perf_counter()
            cpu_started = time.process_time()
            post_stories(client, args.posts, random.Random(args.seed))
            elapsed = time.perf_counter() - started
            time.sleep(3.0)  # the relay drains what the last posts left
            cpu_per_post_us = (time.process_time() - cpu_started) / args.posts * 1e6
        finally:
            service.relay.stop()
    rows = []
    for (file_name, kind, clock), holds in sorted(_holds.items()):
        holds.sort()
        rows.append(
            (
                file_name,
                kind,
                clock,
                len(holds),
                f"{percentile(holds, 50):.3f}",
                f"{percentile(holds, 99):.3f}",
                f"{percentile(holds, 99.9):.3f}",
                f"{holds[-1]:.3f}",
                sum(1 for hold in holds if hold > 10),
            )
        )
    headers = (
        "file",
        "thread",
        "clock",
        "writes",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "> 10 ms",
    )
    print(format_table(headers, rows))
    print(f"{args.posts} posts in {elapsed:.1f} s ({args.posts / elapsed:.0f} posts/s, one thread)")
    print(f"process CPU per post, indexing included: {cpu_per_post_us:.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

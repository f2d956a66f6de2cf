"""Embedded search through real gunicorn processes: no index entry is lost to a crash (#16)."""

import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

from feedsvc.adapters.outbox import backlog
from feedsvc.adapters.search.embedded import EmbeddedSearch, index_file
from feedsvc.core.config import Config
from feedsvc.db import engines
from loadtest.harness.gunicorn import GunicornServer
from tests.support.processes import killed_at_exit

POSTS = 120
DEADLINE_SECONDS = 60.0


def indexed_and_queued(config: Config) -> tuple[int, int]:
    """Posts in the search index, and posts still waiting for it in the outbox."""
    engine = engines.create_engine(config)
    search = EmbeddedSearch(engine, config.sqlite_synchronous)
    try:
        return search.index.count(), backlog(engine)
    finally:
        search.close()
        engine.dispose()


def test_posts_acknowledged_before_a_kill_9_of_every_process_are_all_indexed_after_restart(
    gunicorn_server, tmp_path
):
    env = {"FEED_DATA_DIR": str(gunicorn_server.data_dir)}
    gunicorn_server.start(env, workers=2)
    gunicorn_server.wait_ready(workers=2)
    sender = gunicorn_server.request("POST", "/participant", {"name": "Doomed"}).json
    config = Config.from_env(env)
    engine = engines.create_engine(config)
    index_path = index_file(engine)
    engine.dispose()
    # The index file stays locked until the crash, so every post is still queued when it comes.
    blocker = sqlite3.connect(index_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")

    def post(number: int) -> int:
        body = {"subject": "s", "story": f"crashword{number} shared"}
        response = gunicorn_server.request("POST", f"{sender['link']}/outbound", body)
        assert response.status == 200
        return number

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert sorted(pool.map(post, range(POSTS))) == list(range(POSTS))
    # Every process at once, workers first so that none outlives its master by a delivery.
    for pid in [*gunicorn_server.worker_pids(), gunicorn_server.pid]:
        os.kill(pid, signal.SIGKILL)
    gunicorn_server.kill()
    blocker.rollback()
    blocker.close()

    assert indexed_and_queued(config) == (0, POSTS)

    with killed_at_exit(GunicornServer(tmp_path / "restarted.log")) as restarted:
        restarted.start(env, workers=2)
        restarted.wait_ready(workers=2)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while indexed_and_queued(config) != (POSTS, 0):
            assert time.monotonic() < deadline, f"index not caught up: {indexed_and_queued(config)}"
            time.sleep(0.1)
        for number in (0, POSTS // 2, POSTS - 1):
            found = restarted.request("GET", f"/outbound?keywords=crashword{number}").json
            assert found == [sender["link"]]
        assert restarted.stop() == 0

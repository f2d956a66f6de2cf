"""Elasticsearch search through real processes: gunicorn workers and `feedsvc reindex`."""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from feedsvc import database
from feedsvc.store import Store
from tests.support.processes import REPO_ROOT

FEEDSVC = Path(sys.executable).parent / "feedsvc"
DEADLINE_SECONDS = 60.0
POSTS_PER_ROUND = 16


def environment(config):
    return {
        "FEED_DATA_DIR": str(config.data_dir),
        "FEED_SEARCH_URL": ",".join(config.search_urls),
        "FEED_SEARCH_INDEX": config.search_index,
    }


def indexed_ids(elastic_client, index):
    elastic_client.indices.refresh(index=index)
    hits = elastic_client.search(index=index, size=10_000, source=False)["hits"]["hits"]
    return sorted(int(hit["_id"]) for hit in hits)


def test_posts_through_every_gunicorn_worker_all_end_up_indexed(
    gunicorn_server, elastic_config, elastic_client, tmp_path
):
    access_log = tmp_path / "access.log"
    env = environment(elastic_config)
    env["GUNICORN_CMD_ARGS"] = (
        f"--access-logfile {access_log} --access-logformat '%(p)s %(m)s %(U)s'"
    )
    gunicorn_server.start(env, workers=2)
    gunicorn_server.wait_ready(workers=2)
    workers = set(gunicorn_server.worker_pids())
    sender = gunicorn_server.request("POST", "/participant", {"name": "Busy"}).json

    def post(number: int) -> int:
        body = {"subject": "s", "story": f"word{number} shared"}
        return gunicorn_server.request("POST", f"{sender['link']}/outbound", body).status

    posted = 0
    deadline = time.monotonic() + DEADLINE_SECONDS
    with ThreadPoolExecutor(max_workers=4) as pool:
        # Concurrent posts until the access log shows that every worker took some.
        while posting_pids(access_log) != workers:
            assert time.monotonic() < deadline, f"posts never reached every worker: {workers}"
            statuses = pool.map(post, range(posted, posted + POSTS_PER_ROUND))
            assert set(statuses) == {200}
            posted += POSTS_PER_ROUND

    while indexed_ids(elastic_client, elastic_config.search_index) != list(range(1, posted + 1)):
        assert time.monotonic() < deadline, "not every post was indexed"
        time.sleep(0.1)
    for number in (0, posted // 2, posted - 1):
        found = gunicorn_server.request("GET", f"/outbound?keywords=word{number}").json
        assert found == [sender["link"]]
    assert gunicorn_server.stop() == 0


def posting_pids(access_log: Path) -> set[int]:
    """Pids of the workers that served a post, from access log lines `<pid> POST <path>`."""
    if not access_log.exists():
        return set()
    posts = [line.split() for line in access_log.read_text().splitlines()]
    return {
        int(pid.strip("<>"))
        for pid, method, path in posts
        if method == "POST" and path.endswith("/outbound")
    }


def test_reindex_rebuilds_an_empty_index_to_the_database_count(elastic_config, elastic_client):
    store = Store(database.create_engine(elastic_config))
    sender = store.create_participant("Prolific")
    occurred = datetime.now(UTC).replace(tzinfo=None)
    with store.transaction() as conn:
        for number in range(3000):
            store.insert_outbound(conn, sender.id, occurred, "s", f"story number {number}")
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEED_")}
    env.update(environment(elastic_config))

    for command in (["reindex"], ["reindex", "--recreate"]):
        done = subprocess.run(
            [str(FEEDSVC), *command], cwd=REPO_ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert "100% 3000/3000 posts" in done.stderr
        assert "reindexed 3000 posts" in done.stdout
        assert "holds 3000 documents, the database 3000 posts" in done.stdout
        assert indexed_ids(elastic_client, elastic_config.search_index) == list(range(1, 3001))


def test_the_service_starts_and_takes_posts_while_elasticsearch_is_down(
    gunicorn_server, elastic_server, elastic_config, elastic_client
):
    index = elastic_config.search_index
    elastic_client.indices.delete(index=index)
    elastic_server.stop()
    try:
        gunicorn_server.start(environment(elastic_config), workers=2)
        gunicorn_server.wait_ready(workers=2)
        sender = gunicorn_server.request("POST", "/participant", {"name": "Early"}).json
        for number in range(5):
            body = {"subject": "s", "story": f"early{number}"}
            assert gunicorn_server.request("POST", f"{sender['link']}/outbound", body).status == 200
    finally:
        elastic_server.start()

    deadline = time.monotonic() + DEADLINE_SECONDS
    while (
        not elastic_client.indices.exists(index=index)
        or len(indexed_ids(elastic_client, index)) < 5
    ):
        assert time.monotonic() < deadline, "the posts were not indexed after the cluster returned"
        time.sleep(0.1)
    assert indexed_ids(elastic_client, index) == [1, 2, 3, 4, 5]
    # The relay created the index with the service's mapping, not one guessed from a document.
    mapping = elastic_client.indices.get_mapping(index=index)[index]["mappings"]["properties"]
    assert mapping["sender"]["type"] == "keyword"
    assert "unreachable" in gunicorn_server.log()
    assert gunicorn_server.stop() == 0

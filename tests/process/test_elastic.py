"""Elasticsearch search through real processes: gunicorn workers and `feedsvc reindex`."""

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from feedsvc.adapters.store import Store
from feedsvc.db import engines
from loadtest.harness.gunicorn import FEEDSVC, REPO_ROOT
from tests.support.elastic import environment, indexed_ids
from tests.support.processes import WORKER_APP
from tests.support.worker_app import WORKER_PID_HEADER

DEADLINE_SECONDS = 60.0
POSTS_PER_ROUND = 16


def test_posts_through_every_gunicorn_worker_all_end_up_indexed(
    gunicorn_server, elastic_config, elastic_client, tmp_path
):
    gunicorn_server.start(environment(elastic_config), workers=2, app=WORKER_APP)
    gunicorn_server.wait_ready(workers=2)
    workers = {str(pid) for pid in gunicorn_server.worker_pids()}
    sender = gunicorn_server.request("POST", "/participant", {"name": "Busy"}).json

    def post(number: int) -> str:
        body = {"subject": "s", "story": f"word{number} shared"}
        response = gunicorn_server.request("POST", f"{sender['link']}/outbound", body)
        assert response.status == 200
        return response.headers[WORKER_PID_HEADER]

    posted = 0
    posting_pids: set[str] = set()
    deadline = time.monotonic() + DEADLINE_SECONDS
    with ThreadPoolExecutor(max_workers=4) as pool:
        # Concurrent posts until every worker took some.
        while posting_pids != workers:
            assert time.monotonic() < deadline, f"posts never reached every worker: {workers}"
            posting_pids |= set(pool.map(post, range(posted, posted + POSTS_PER_ROUND)))
            posted += POSTS_PER_ROUND

    while indexed_ids(elastic_client, elastic_config.search_index) != list(range(1, posted + 1)):
        assert time.monotonic() < deadline, "not every post was indexed"
        time.sleep(0.1)
    for number in (0, posted // 2, posted - 1):
        found = gunicorn_server.request("GET", f"/outbound?keywords=word{number}").json
        assert found == [sender["link"]]
    assert gunicorn_server.stop() == 0


def test_reindex_rebuilds_an_empty_index_to_the_database_count(elastic_config, elastic_client):
    store = Store(engines.create_engine(elastic_config))
    occurred = datetime.now(UTC).replace(tzinfo=None)
    with store.transaction() as conn:
        sender = store.insert_participant(conn, "Prolific")
        for number in range(3000):
            store.insert_post(conn, sender.id, occurred, "s", f"story number {number}")
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

"""Posts Elasticsearch acknowledged and then lost are found and sent again."""

import os
import subprocess
import time
from datetime import timedelta

import sqlalchemy as sa

from feedsvc.db import engines
from feedsvc.db.tables import outbound
from loadtest.harness.gunicorn import FEEDSVC, REPO_ROOT
from tests.support.elastic import environment, indexed_ids, wait_until_indexed
from tests.support.prometheus import sample

POSTS = 30
LOST = (3, 4, 17, 29, 30)
# Only there so that a reconciliation that never comes fails the test instead of hanging it.
DEADLINE_S = 60.0


def run_feedsvc(config, *arguments):
    """The `feedsvc` command with this test's settings, as an operator would run it."""
    return subprocess.run(
        [str(FEEDSVC), *arguments],
        cwd=REPO_ROOT,
        env={**environment(config), "PATH": os.environ.get("PATH", "")},
        capture_output=True,
        text=True,
        timeout=120,
    )


def lose(client, index, doc_ids):
    """What a cluster that lost acknowledged writes holds: everything but these."""
    for doc_id in doc_ids:
        client.delete(index=index, id=str(doc_id))
    client.indices.refresh(index=index)


def test_workers_send_again_what_the_index_lost_and_count_it(
    gunicorn_server, elastic_config, elastic_client
):
    gunicorn_server.start(
        {**environment(elastic_config), "FEED_SEARCH_RECONCILE_INTERVAL": "1"}, workers=2
    )
    gunicorn_server.wait_ready(workers=2)
    sender = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json
    for number in range(POSTS):
        body = {"subject": "s", "story": f"word{number} shared"}
        assert gunicorn_server.request("POST", f"{sender['link']}/outbound", body).status == 200
    wait_until_indexed(elastic_config, elastic_client)
    everything = list(range(1, POSTS + 1))
    assert indexed_ids(elastic_client, elastic_config.search_index) == everything

    lose(elastic_client, elastic_config.search_index, LOST)
    give_up = time.monotonic() + DEADLINE_S
    while indexed_ids(elastic_client, elastic_config.search_index) != everything:
        assert time.monotonic() < give_up, "the lost posts were never sent again"
        time.sleep(0.5)
    found = gunicorn_server.request("GET", "/outbound?keywords=word28").json
    assert found == [sender["link"]]
    metrics = gunicorn_server.request("GET", "/metrics").body.decode()
    assert sample(metrics, "feed_search_reconciled_documents_total") == len(LOST)
    assert gunicorn_server.stop() == 0


def test_reindex_since_sends_only_the_missing_posts_of_the_period(
    elastic_config, elastic_client, elastic_indexed_client
):
    sender = elastic_indexed_client.simulate_post("/participant", json={"name": "Ada"}).json
    for number in range(POSTS):
        body = {"subject": "s", "story": f"word{number}"}
        assert (
            elastic_indexed_client.simulate_post(
                f"{sender['link']}/outbound", json=body
            ).status_code
            == 200
        )
    engine = engines.create_engine(elastic_config)
    try:
        with engine.begin() as conn:  # posts 1-10 were made two hours ago
            conn.execute(
                sa.update(outbound)
                .where(outbound.c.id <= 10)
                .values(occurred=outbound.c.occurred - timedelta(hours=2))
            )
    finally:
        engine.dispose()
    lose(elastic_client, elastic_config.search_index, LOST)

    done = run_feedsvc(elastic_config, "reindex", "--since", "1h")
    assert done.returncode == 0, done.stderr
    assert "checked 20 posts" in done.stdout
    assert "sent 3 missing" in done.stdout
    held = indexed_ids(elastic_client, elastic_config.search_index)
    assert held == [number for number in range(1, POSTS + 1) if number not in (3, 4)]


def test_reindex_since_refuses_a_bad_duration(elastic_config):
    done = run_feedsvc(elastic_config, "reindex", "--since", "yesterday")
    assert done.returncode == 2
    assert "not a duration" in done.stderr

"""Search on Elasticsearch (a noida-db server over HTTP): schema, results, outages, 503s."""

import socket
import threading
from collections.abc import Iterator

import falcon.testing
import pytest

from feedsvc.adapters.search.elastic import MAPPINGS
from feedsvc.compose.service import build_service
from feedsvc.core.config import Config
from feedsvc.db import engines
from feedsvc.db.tables import metadata
from loadtest.harness.ports import free_port
from tests.support.api import outbox_backlog
from tests.support.elastic import wait_until_indexed


def create_participant(client, name):
    result = client.simulate_post("/participant", json={"name": name})
    assert result.status_code == 200, result.text
    return result.json


def publish(client, sender, story):
    result = client.simulate_post(
        f"{sender['link']}/outbound", json={"subject": "s", "story": story}
    )
    assert result.status_code == 200, result.text
    return result.json


def search(client, keywords, **params):
    result = client.simulate_get("/outbound", params={"keywords": keywords, **params})
    assert result.status_code == 200, result.text
    return result.json


def test_init_db_creates_the_index_with_its_mapping(elastic_config, elastic_client):
    mapping = elastic_client.indices.get_mapping(index=elastic_config.search_index)
    properties = mapping[elastic_config.search_index]["mappings"]["properties"]
    assert properties["story"]["type"] == "text"
    assert properties["sender"]["type"] == "keyword"
    assert properties["occurred"]["type"] == "date"
    assert set(properties) == set(MAPPINGS["properties"])
    settings = elastic_client.indices.get_settings(index=elastic_config.search_index)
    assert settings[elastic_config.search_index]["settings"]["index"]["refresh_interval"] == "500ms"


def test_posts_are_indexed_under_their_id_and_found_by_keyword(
    elastic_indexed_client, elastic_config, elastic_client
):
    ada = create_participant(elastic_indexed_client, "Ada")
    bob = create_participant(elastic_indexed_client, "Bob")
    publish(elastic_indexed_client, ada, "Café society, déjà vu")
    publish(elastic_indexed_client, bob, "cafe_racer motorbikes with classic leather jackets")

    assert search(elastic_indexed_client, "CAFE") == [ada["link"], bob["link"]]
    assert search(elastic_indexed_client, "racer") == [bob["link"]]
    assert search(elastic_indexed_client, "cafe", limit=1) == [ada["link"]]
    document = elastic_client.get(index=elastic_config.search_index, id="1")["_source"]
    assert document["sender"] == str(ada["id"])
    assert document["story"] == "Café society, déjà vu"


def test_ties_list_senders_by_id_like_the_embedded_backend(elastic_indexed_client):
    senders = [create_participant(elastic_indexed_client, f"P{n}") for n in range(12)]
    for sender in reversed(senders):
        publish(elastic_indexed_client, sender, "same words exactly")

    assert search(elastic_indexed_client, "words") == [sender["link"] for sender in senders]


def test_posting_works_and_is_delivered_later_while_elasticsearch_is_down(
    elastic_server, elastic_config, elastic_client
):
    service = build_service(elastic_config)
    client = falcon.testing.TestClient(service.app)
    try:
        senders = [create_participant(client, f"Writer {n}") for n in range(5)]
        elastic_server.stop()
        try:
            for n in range(40):
                publish(client, senders[n % 5], f"outage{n} news")
            assert outbox_backlog(elastic_config) == 40
            unavailable = client.simulate_get("/outbound", params={"keywords": "news"})
            assert unavailable.status_code == 503
            assert unavailable.json["title"] == "Search unavailable"
        finally:
            elastic_server.start()
        # No manual step: the relay retries on its own and drains the backlog.
        wait_until_indexed(elastic_config, elastic_client)
        for n in range(40):
            assert search(client, f"outage{n}") == [senders[n % 5]["link"]]
        assert elastic_client.count(index=elastic_config.search_index)["count"] == 40
    finally:
        service.relay.stop()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A socket that accepts connections and never answers: a hung cluster."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.mark.parametrize("cluster", ["refused", "hung"])
def test_a_search_the_cluster_cannot_answer_is_a_503(tmp_path, silent_server, cluster):
    url = silent_server if cluster == "hung" else f"http://127.0.0.1:{free_port()}"
    config = Config.from_env({"FEED_DATA_DIR": str(tmp_path), "FEED_SEARCH_URL": url})
    engine = engines.create_engine(config)
    metadata.create_all(engine)  # the tables only: init-db would also need the cluster
    engine.dispose()
    service = build_service(config)
    try:
        client = falcon.testing.TestClient(service.app)
        sender = create_participant(client, "Ada")
        publish(client, sender, "still accepted")

        result = client.simulate_get("/outbound", params={"keywords": "accepted"})

        assert result.status_code == 503, result.text
        assert result.headers["content-type"].startswith("application/json")
        assert result.headers["retry-after"] == "5"
        assert outbox_backlog(config) == 1
    finally:
        service.relay.stop()

"""Elasticsearch fixtures: the session's stand-in server (loadtest.harness.elastic), an index of
each test's own, and the service wired to it."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from feedsvc.compose.schema import init_db
from feedsvc.compose.service import Service, build_service
from feedsvc.core.config import Config
from loadtest.harness.elastic import ElasticServer
from tests.support.api import IndexedTestClient, wait_until_delivered
from tests.support.unavailable import unavailable


@pytest.fixture(scope="session")
def elastic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ElasticServer]:
    """The session's server; a test that stops it must start it again (see `stopped_elastic`)."""
    server = ElasticServer(tmp_path_factory.mktemp("elastic"))
    try:
        server.start()
    except (ImportError, OSError, RuntimeError, TimeoutError) as error:
        unavailable("Elasticsearch test server (noida-db)", f"{type(error).__name__}: {error}")
    yield server
    server.stop()


@pytest.fixture
def elastic_config(tmp_path: Path, elastic_server: ElasticServer) -> Iterator[Config]:
    """Settings with search on Elasticsearch, in an index of this test's own, deleted after it."""
    config = Config.from_env(
        {
            "FEED_DATA_DIR": str(tmp_path),
            "FEED_SEARCH_URL": elastic_server.url,
            "FEED_SEARCH_INDEX": f"feed-test-{uuid.uuid4().hex}",
        }
    )
    init_db(config)
    yield config
    with Elasticsearch(elastic_server.url) as client:
        client.options(ignore_status=404).indices.delete(index=config.search_index)


@pytest.fixture
def elastic_client(elastic_server: ElasticServer) -> Iterator[Elasticsearch]:
    with Elasticsearch(elastic_server.url) as client:
        yield client


@pytest.fixture
def elastic_service(elastic_config: Config) -> Iterator[Service]:
    """The app, wired as in a worker, with its outbox relay stopped after the test."""
    service = build_service(elastic_config)
    yield service
    service.relay.stop()


def environment(config: Config) -> dict[str, str]:
    """The FEED_* variables that give a process (gunicorn, `feedsvc`) this test's search."""
    return {
        "FEED_DATA_DIR": str(config.data_dir),
        "FEED_SEARCH_URL": ",".join(config.search_urls),
        "FEED_SEARCH_INDEX": config.search_index,
    }


def indexed_ids(client: Elasticsearch, index: str) -> list[int]:
    """The ids of every document in the index, in order, once it is refreshed."""
    client.indices.refresh(index=index)
    hits = client.search(index=index, size=10_000, source=False)["hits"]["hits"]
    return sorted(int(hit["_id"]) for hit in hits)


def wait_until_indexed(config: Config, client: Elasticsearch) -> None:
    """Wait for the relay to deliver every queued post, then make them visible to searches."""
    wait_until_delivered(config)
    client.indices.refresh(index=config.search_index)


@pytest.fixture
def elastic_indexed_client(
    elastic_service: Service, elastic_config: Config, elastic_client: Elasticsearch
) -> IndexedTestClient:
    """Elasticsearch makes what it indexed searchable at its next refresh: asked for at once."""
    refresh = functools.partial(elastic_client.indices.refresh, index=elastic_config.search_index)
    return IndexedTestClient(elastic_service.app, elastic_config, refresh)

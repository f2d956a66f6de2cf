"""An Elasticsearch-API server (noida-db) for the tests: free port, temporary data, stoppable."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from elasticsearch import Elasticsearch

from feedsvc import database
from feedsvc.config import Config
from feedsvc.wsgi import Service, build_service
from tests.support.api import IndexedTestClient, wait_until_delivered

FEEDSVC = Path(sys.executable).parent / "feedsvc"
START_DEADLINE_SECONDS = 30.0
STOP_DEADLINE_SECONDS = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def service_unavailable(reason: str) -> None:
    """Without CI a missing backing service skips, with a reason; under CI=true it fails."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Elasticsearch test server unavailable under CI: {reason}")
    pytest.skip(f"Elasticsearch test server unavailable: {reason}")


def noida_binary() -> Path:
    import noida_db  # the wheel ships the server binary next to its Python launcher

    return Path(noida_db.__file__).parent / "noida-db"


class ElasticServer:
    """One noida-db process serving only the Elasticsearch API; stop() and start() keep the data."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 -- closed in stop()
        command = [
            str(noida_binary()),
            "start",
            "--data-dir",
            str(self.data_dir / "data"),
            "--only",
            "elasticsearch",
            "--elasticsearch-port",
            str(self.port),
        ]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_DEADLINE_SECONDS
        while not self._answers():
            if self._process.poll() is not None:
                raise RuntimeError(f"noida-db exited with {self._process.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"noida-db did not answer on {self.url}: {self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(STOP_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        path = self.data_dir / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=1) as response:
                return response.status == 200
        except OSError:
            return False


@pytest.fixture(scope="session")
def elastic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ElasticServer]:
    """The session's server; a test that stops it must start it again (see `stopped_elastic`)."""
    server = ElasticServer(tmp_path_factory.mktemp("elastic"))
    try:
        server.start()
    except (ImportError, OSError, RuntimeError, TimeoutError) as error:
        service_unavailable(f"{type(error).__name__}: {error}")
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
    database.init_db(config)
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

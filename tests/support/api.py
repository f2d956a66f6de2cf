"""API test fixtures and helpers: a fresh database per test, a client on it, a write detector."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import falcon.testing
import pytest
import sqlalchemy as sa

from feedsvc.adapters.outbox import backlog
from feedsvc.compose.schema import init_db
from feedsvc.compose.service import Service, build_service
from feedsvc.core.config import Config
from feedsvc.db import engines, tables

RowCounts = Callable[[], dict[str, int]]
DRAIN_DEADLINE_SECONDS = 60.0

LINK_PATTERN = re.compile(r"^/participant/([1-9][0-9]*)$")
NEXT_LINK_PATTERN = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


@pytest.fixture
def api_config(tmp_path: Path, database_url: str) -> Config:
    """The service's settings on a fresh, initialised database, once per storage backend."""
    config = Config.from_env({"FEED_DATA_DIR": str(tmp_path), "FEED_DATABASE_URL": database_url})
    init_db(config)
    return config


@pytest.fixture
def service(api_config: Config) -> Iterator[Service]:
    """The app, wired by the same factory gunicorn uses, with its outbox relay stopped after."""
    service = build_service(api_config)
    yield service
    service.relay.stop()


@pytest.fixture
def client(service: Service) -> falcon.testing.TestClient:
    """The real application driven in-process."""
    return falcon.testing.TestClient(service.app)


def outbox_backlog(config: Config) -> int:
    """Rows the relay has yet to deliver, of every sink."""
    engine = engines.create_engine(config)
    try:
        return backlog(engine)
    finally:
        engine.dispose()


def wait_until_delivered(config: Config) -> None:
    """Wait for the relay to deliver every queued row (a post's search index entry)."""
    deadline = time.monotonic() + DRAIN_DEADLINE_SECONDS
    while outbox_backlog(config):
        assert time.monotonic() < deadline, "the outbox did not drain"
        time.sleep(0.02)


class IndexedTestClient(falcon.testing.TestClient):
    """A test client whose posts are searchable when they return.

    Search is near-real-time (posts are indexed through the outbox); waiting here lets the
    backend-independent search tests compare results rather than timing.
    """

    def __init__(
        self, app: falcon.App, config: Config, refresh: Callable[[], object] = lambda: None
    ) -> None:
        super().__init__(app)
        self._config = config
        self._refresh = refresh

    def simulate_request(self, *args: Any, **kwargs: Any) -> falcon.testing.Result:
        result = super().simulate_request(*args, **kwargs)
        method = args[0] if args else kwargs.get("method")
        if method == "POST" and result.status_code == 200:
            wait_until_delivered(self._config)
            self._refresh()
        return result


@pytest.fixture
def indexed_client(service: Service, api_config: Config) -> IndexedTestClient:
    return IndexedTestClient(service.app, api_config)


@pytest.fixture
def row_counts(api_config: Config) -> RowCounts:
    """Callable giving {table: rows} for every table, so a test can prove nothing was written.

    It counts once the outbox relay has delivered what is queued, so that the relay's deletes
    cannot make two counts differ.
    """

    def count_rows() -> dict[str, int]:
        wait_until_delivered(api_config)
        engine = engines.create_engine(api_config)
        try:
            with engine.connect() as conn:
                return {
                    table.name: conn.execute(
                        sa.select(sa.func.count()).select_from(table)
                    ).scalar_one()
                    for table in tables.metadata.sorted_tables
                }
        finally:
            engine.dispose()

    return count_rows


def create_participant(client: falcon.testing.TestClient, name: str = "Ada") -> dict[str, Any]:
    """POST /participant and return the created participant; any other status fails the test."""
    result = client.simulate_post("/participant", json={"name": name})
    assert result.status_code == 200, result.text
    return result.json


@pytest.fixture
def ada(client: falcon.testing.TestClient) -> dict[str, Any]:
    """A participant named Ada, made through the API."""
    return create_participant(client, "Ada")


@pytest.fixture
def bob(client: falcon.testing.TestClient) -> dict[str, Any]:
    """A participant named Bob, made through the API."""
    return create_participant(client, "Bob")


def befriend(
    client: falcon.testing.TestClient, participant: dict[str, Any], friend: dict[str, Any]
) -> dict[str, Any]:
    """Make two participants friends and return the friendship."""
    result = client.simulate_post(f"{participant['link']}/friends", json={"to": friend["link"]})
    assert result.status_code == 200, result.text
    return result.json


def publish(
    client: falcon.testing.TestClient,
    sender: dict[str, Any],
    subject: str = "Hello",
    story: str = "A story",
) -> dict[str, Any]:
    """POST an outbound story for `sender` and return the stored post."""
    body = {"subject": subject, "story": story}
    result = client.simulate_post(f"{sender['link']}/outbound", json=body)
    assert result.status_code == 200, result.text
    return result.json


def assert_error(result: falcon.testing.Result, status: int) -> None:
    """The response is the given error status in Falcon's JSON error format."""
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("application/json")
    body = result.json
    assert isinstance(body, dict), body
    assert isinstance(body.get("title"), str) and body["title"], body
    assert isinstance(body.get("description"), str) and body["description"], body


def next_page(result: falcon.testing.Result) -> tuple[str, str] | None:
    """The (path, query string) of the Link rel="next" header, or None when there is none."""
    header = result.headers.get("link")
    if header is None:
        return None
    match = NEXT_LINK_PATTERN.search(header)
    assert match, f"Link header without rel=next: {header!r}"
    url = urlsplit(match.group(1))
    return url.path, url.query


def walk_pages(
    client: falcon.testing.TestClient, path: str, query_string: str
) -> list[list[dict[str, Any]]]:
    """Follow rel="next" links from the first page to the last, returning every page's items."""
    pages: list[list[dict[str, Any]]] = []
    location: tuple[str, str] | None = (path, query_string)
    while location is not None:
        result = client.simulate_get(location[0], query_string=location[1])
        assert result.status_code == 200, result.text
        pages.append(result.json)
        location = next_page(result)
        assert len(pages) <= 1000, "pagination does not terminate"
    return pages


def requests_of_every_kind(
    ada: dict[str, Any], bob: dict[str, Any]
) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(method, path, JSON body) of each kind of request served from the database, for Ada and
    her friend Bob (whose inbound holds a story of hers)."""
    return [
        ("GET", "/ready", None),
        ("GET", ada["link"], None),
        ("GET", f"{ada['link']}/friends", None),
        ("GET", f"{bob['link']}/inbound", None),
        ("GET", f"{ada['link']}/outbound", None),
        ("GET", "/outbound?keywords=story", None),
        ("POST", "/participant", {"name": "Carol"}),
        ("POST", f"{ada['link']}/friends", {"to": bob["link"]}),
        ("POST", f"{ada['link']}/outbound", {"subject": "lost?", "story": "never stored"}),
    ]


def simulate(
    client: falcon.testing.TestClient, method: str, path: str, body: dict[str, Any] | None
) -> falcon.testing.Result:
    """One request in-process; `path` may carry a query string."""
    path, _, query = path.partition("?")
    return client.simulate_request(method, path, query_string=query, json=body)

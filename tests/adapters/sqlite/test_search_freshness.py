"""Near-real-time search (#16): a post is indexed by the outbox relay after it is acknowledged.

The embedded FTS5 index lives in a file of its own, written by the relay; these tests check
that a post becomes findable, that delivery is idempotent, and that a lost index file is rebuilt.
"""

import os
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from feedsvc.adapters.search.embedded import SINK_NAME, EmbeddedSearch, index_file
from feedsvc.compose.schema import init_db
from feedsvc.compose.service import build_service
from feedsvc.core.config import Config
from feedsvc.core.protocols import OutboxRow
from feedsvc.db import engines
from feedsvc.db.tables import outbox
from loadtest.harness.gunicorn import FEEDSVC, REPO_ROOT
from tests.support.api import create_participant, publish

# Generous: the promise is one second under load; a contended test machine gets ten.
FINDABLE_DEADLINE_SECONDS = 10.0


def findable(client, keywords: str, sender: dict) -> bool:
    result = client.simulate_get("/outbound", params={"keywords": keywords})
    assert result.status_code == 200, result.text
    return result.json == [sender["link"]]


def test_a_post_becomes_findable_soon_after_it_is_acknowledged(client):
    sender = create_participant(client, "Fresh")
    publish(client, sender, "New", "kaleidoscope")

    deadline = time.monotonic() + FINDABLE_DEADLINE_SECONDS
    while not findable(client, "kaleidoscope", sender):
        assert time.monotonic() < deadline, "the post was not findable within the bound"
        time.sleep(0.02)


@pytest.fixture
def sqlite_config(tmp_path: Path) -> Config:
    config = Config.from_env({"FEED_DATA_DIR": str(tmp_path)})
    init_db(config)
    return config


def queued_rows(engine: sa.Engine) -> list[OutboxRow]:
    with engine.connect() as conn:
        query = sa.select(outbox.c.id, outbox.c.key, outbox.c.payload).where(
            outbox.c.sink == SINK_NAME
        )
        return [OutboxRow(row.id, row.key, bytes(row.payload)) for row in conn.execute(query)]


def test_a_post_is_queued_in_its_transaction_and_indexed_by_delivery(sqlite_config):
    # No relay runs here: the posts wait in the outbox, not in the index.
    service = build_service(sqlite_config, start_relay=False)
    feed, search = service.feed, service.search
    try:
        keen = feed.create_participant("Keen")
        casual = feed.create_participant("Casual")
        feed.social_broadcast(keen.id, "Fruit", "apple apple apple")
        feed.social_broadcast(casual.id, "Market", "apple banana cherry grape")

        assert search.senders_matching("apple", 10) == []
        rows = queued_rows(service.engine)
        assert [row.key for row in rows] == ["1", "2"]

        (sink,) = search.outbox_sinks
        sink.deliver(rows)
        assert search.senders_matching("apple", 10) == [keen.id, casual.id]
        # Delivered again (a crash between indexing and deleting the rows): nothing changes.
        sink.deliver(rows)
        assert search.index.count() == 2
        assert search.senders_matching("banana", 10) == [casual.id]
    finally:
        service.close()


def posts(config: Config, count: int) -> int:
    """Store `count` posts by one sender straight in the database; returns the sender's id."""
    service = build_service(config, start_relay=False)
    try:
        sender = service.feed.create_participant("Prolific")
        for number in range(count):
            service.feed.social_broadcast(sender.id, "s", f"story number{number}")
        return sender.id
    finally:
        service.close()


def indexed(config: Config) -> tuple[int, list[int]]:
    """(posts in the index, senders found for the word of the last post)."""
    engine = engines.create_engine(config)
    search = EmbeddedSearch(engine, config.sqlite_synchronous)
    try:
        return search.index.count(), search.senders_matching("story", 10)
    finally:
        search.close()
        engine.dispose()


def delete_index_file(config: Config) -> None:
    engine = engines.create_engine(config)
    path = index_file(engine)
    engine.dispose()
    assert path.exists()
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        file.unlink(missing_ok=True)


def test_an_index_file_deleted_by_hand_is_rebuilt_at_start(sqlite_config):
    sender_id = posts(sqlite_config, 30)
    delete_index_file(sqlite_config)

    init_db(sqlite_config)

    assert indexed(sqlite_config) == (30, [sender_id])


@pytest.mark.parametrize("options", [[], ["--recreate"]])
def test_an_index_file_deleted_by_hand_is_rebuilt_by_reindex(sqlite_config, options):
    sender_id = posts(sqlite_config, 2500)
    delete_index_file(sqlite_config)
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEED_")}
    env["FEED_DATA_DIR"] = str(sqlite_config.data_dir)

    done = subprocess.run(
        [str(FEEDSVC), "reindex", *options], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )

    assert done.returncode == 0, done.stderr
    assert "100% 2500/2500 posts" in done.stderr
    assert "holds 2500 documents, the database 2500 posts" in done.stdout
    assert indexed(sqlite_config) == (2500, [sender_id])


def test_init_db_moves_the_inline_index_of_older_versions_to_the_file(sqlite_config):
    sender_id = posts(sqlite_config, 5)
    delete_index_file(sqlite_config)
    engine = engines.create_engine(sqlite_config)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE VIRTUAL TABLE outbound_fts USING fts5(story)")
    engine.dispose()

    init_db(sqlite_config)

    engine = engines.create_engine(sqlite_config)
    try:
        assert "outbound_fts" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    assert indexed(sqlite_config) == (5, [sender_id])

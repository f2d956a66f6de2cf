"""SQLite FTS5 search: the embedded default, in a database file of its own fed by the outbox.

A post's transaction only queues the post's id (see adapters/outbox.py); the relay indexes posts in
batches into `<database>-search.db`. FTS5 merges its segments while it writes, for up to tens
of milliseconds: in a file of its own that holds the index file's lock, never the write lock
that posts need. A post is searchable once the relay delivered it, well within a second.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Connection, bindparam, select, text
from sqlalchemy.engine import Engine

from feedsvc.adapters.outbox import enqueue
from feedsvc.adapters.search.rebuild import copy_posts
from feedsvc.adapters.store import Store
from feedsvc.core.model import Post
from feedsvc.core.protocols import OutboxRow, Sink
from feedsvc.core.search import MAX_RANKED_POSTS, keywords_to_words
from feedsvc.db.engines import sqlite_engine, writer
from feedsvc.db.statements import CompiledQuery, Reader
from feedsvc.db.tables import outbound

log = logging.getLogger(__name__)

SINK_NAME = "fts"
INDEX_FILE_SUFFIX = "-search"

# Contentless: the stories stay in the main database; the index keeps only its tokens. FTS5
# accepts a rowid twice in a contentless table, so `indexed_post` is what makes indexing
# idempotent, and it maps a hit to its sender without reading the main database.
_CREATE = (
    text(
        "CREATE VIRTUAL TABLE IF NOT EXISTS story_fts USING fts5("
        "story, content='', tokenize='unicode61 remove_diacritics 2')"
    ),
    text(
        "CREATE TABLE IF NOT EXISTS indexed_post ("
        "id INTEGER PRIMARY KEY, sender_id INTEGER NOT NULL)"
    ),
)
_DROP = (text("DROP TABLE IF EXISTS story_fts"), text("DROP TABLE IF EXISTS indexed_post"))
# The index of versions that kept it inside the main database, replaced by the file of its own.
_DROP_INLINE_INDEX = text("DROP TABLE IF EXISTS outbound_fts")
_ALREADY_INDEXED = text("SELECT id FROM indexed_post WHERE id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)
_INSERT_POST = text("INSERT INTO indexed_post (id, sender_id) VALUES (:id, :sender_id)")
_INSERT_STORY = text("INSERT INTO story_fts (rowid, story) VALUES (:id, :story)")
_HIGHEST_INDEXED = text("SELECT COALESCE(MAX(id), 0) FROM indexed_post")
_COUNT = text("SELECT COUNT(*) FROM indexed_post")
_POSTS_BY_ID = select(outbound).where(outbound.c.id.in_(bindparam("ids", expanding=True)))
_SEARCH = text(
    "SELECT p.sender_id FROM ("
    "  SELECT rowid AS id, rank FROM story_fts WHERE story_fts MATCH :query"
    f"  ORDER BY rank LIMIT {MAX_RANKED_POSTS}"
    ") AS hit JOIN indexed_post AS p ON p.id = hit.id "
    "GROUP BY p.sender_id ORDER BY MIN(hit.rank), p.sender_id LIMIT :limit"
)


def index_file(database_engine: Engine) -> Path:
    """Where the index of this database lives: beside it, `feed.db` -> `feed-search.db`."""
    database = Path(database_engine.url.database or "")
    return database.with_name(database.stem + INDEX_FILE_SUFFIX + database.suffix)


class EmbeddedIndex:
    """The FTS5 index file: its schema and batch writes, shared by the relay and `reindex`."""

    def __init__(self, database_engine: Engine, synchronous: str) -> None:
        self.path = index_file(database_engine)
        self.name = str(self.path)
        self.engine = sqlite_engine(f"sqlite:///{self.path}", synchronous)
        self._writer = writer(self.engine)

    def create(self) -> None:
        with self._writer.begin() as conn:
            for statement in _CREATE:
                conn.execute(statement)

    def recreate(self) -> None:
        with self._writer.begin() as conn:
            for statement in (*_DROP, *_CREATE):
                conn.execute(statement)

    def index_posts(self, posts: Sequence[Post]) -> None:
        """Index posts in one transaction; a post indexed before is left as it is."""
        if not posts:
            return
        with self._writer.begin() as conn:
            ids = [post.id for post in posts]
            done = {row.id for row in conn.execute(_ALREADY_INDEXED, {"ids": ids})}
            new = [post for post in posts if post.id not in done]
            if new:
                conn.execute(
                    _INSERT_POST, [{"id": post.id, "sender_id": post.sender_id} for post in new]
                )
                conn.execute(_INSERT_STORY, [{"id": post.id, "story": post.story} for post in new])

    def highest_indexed(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(_HIGHEST_INDEXED).scalar_one()

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(_COUNT).scalar_one()

    def close(self) -> None:
        self.engine.dispose()


class EmbeddedIndexSink:
    """Delivers outbox rows of the `fts` sink: each names a post, read from the main database."""

    name = SINK_NAME

    def __init__(self, database_engine: Engine, index: EmbeddedIndex) -> None:
        self._database_engine = database_engine
        self._index = index

    def deliver(self, rows: list[OutboxRow]) -> None:
        ids = [int(row.key) for row in rows if row.key is not None]
        with self._database_engine.connect() as conn:
            found = conn.execute(_POSTS_BY_ID, {"ids": ids}).all()
        self._index.index_posts([Post(*row) for row in found])


class EmbeddedSearch:
    """Full-text search beside the SQLite database: nothing else to run."""

    def __init__(self, database_engine: Engine, synchronous: str) -> None:
        self._database_engine = database_engine
        self.index = EmbeddedIndex(database_engine, synchronous)
        self.outbox_sinks: tuple[Sink, ...] = (EmbeddedIndexSink(database_engine, self.index),)
        self._reader = Reader(self.index.engine)
        self._search = CompiledQuery(self.index.engine, _SEARCH)

    def create_schema(self) -> None:
        """Create the index file if missing and index every post above the highest indexed one.

        A file deleted by hand is rebuilt here, at start; posts whose outbox rows a crash left
        are indexed by the relay as well, which is harmless (indexing is idempotent).
        """
        self.index.create()
        with writer(self._database_engine).begin() as conn:
            conn.execute(_DROP_INLINE_INDEX)
        store = Store(self._database_engine)
        missing = copy_posts(store, self.index, after=self.index.highest_indexed())
        caught_up = max(missing, default=0)
        if caught_up:
            log.info("search: indexed %d posts missing from %s", caught_up, self.index.name)

    def close(self) -> None:
        self.index.close()

    def index_post(self, conn: Connection, post: Post) -> None:
        """Queue the post's id: the story is read from the post itself when it is indexed."""
        enqueue(conn, SINK_NAME, b"", key=str(post.id))

    def senders_matching(self, keywords: str, limit: int) -> list[int]:
        words = keywords_to_words(keywords)
        if not words:
            return []
        # Each word becomes a quoted FTS5 string, so no character can act as an operator.
        query = " OR ".join(f'"{word}"' for word in words)
        rows = self._reader.rows(self._search, {"query": query, "limit": limit})
        return [sender_id for (sender_id,) in rows]

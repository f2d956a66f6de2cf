"""SQLite FTS5 search: the embedded default, indexed in the post's own transaction."""

from sqlalchemy import Connection, text
from sqlalchemy.engine import Engine

from feedsvc.database import CompiledQuery, Reader, run_in
from feedsvc.model import Post
from feedsvc.search import MAX_RANKED_POSTS, keywords_to_words

_CREATE = text(
    "CREATE VIRTUAL TABLE IF NOT EXISTS outbound_fts USING fts5("
    "story, content='outbound', content_rowid='id', tokenize='unicode61 remove_diacritics 2')"
)
_INDEX = text("INSERT INTO outbound_fts (rowid, story) VALUES (:id, :story)")
_SEARCH = text(
    "SELECT o.sender_id FROM ("
    "  SELECT rowid AS id, rank FROM outbound_fts WHERE outbound_fts MATCH :query"
    f"  ORDER BY rank LIMIT {MAX_RANKED_POSTS}"
    ") AS hit JOIN outbound AS o ON o.id = hit.id "
    "GROUP BY o.sender_id ORDER BY MIN(hit.rank), o.sender_id LIMIT :limit"
)


class EmbeddedSearch:
    """Full-text search inside the SQLite database itself: nothing else to run."""

    outbox_sinks = ()  # indexed inside the post's transaction: nothing to deliver later

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader = Reader(engine)
        self._search = CompiledQuery(engine, _SEARCH)
        self._index = CompiledQuery(engine, _INDEX)

    def create_schema(self) -> None:
        with self._engine.begin() as conn:
            conn.execute(_CREATE)

    def close(self) -> None:
        """Nothing of its own to close: it works through the feed's database engine."""

    def index_post(self, conn: Connection, post: Post) -> None:
        run_in(conn, self._index, {"id": post.id, "story": post.story})

    def senders_matching(self, keywords: str, limit: int) -> list[int]:
        words = keywords_to_words(keywords)
        if not words:
            return []
        # Each word becomes a quoted FTS5 string, so no character can act as an operator.
        query = " OR ".join(f'"{word}"' for word in words)
        rows = self._reader.rows(self._search, {"query": query, "limit": limit})
        return [sender_id for (sender_id,) in rows]

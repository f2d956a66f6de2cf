"""MySQL/MariaDB search without Elasticsearch: an InnoDB FULLTEXT index on outbound.story."""

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine

from feedsvc.core.model import Post
from feedsvc.core.search import MAX_RANKED_POSTS, keywords_to_words
from feedsvc.db.statements import CompiledQuery, Reader

INDEX_NAME = "ft_outbound_story"

# Natural language mode over words only: the string holds no operator, so no keyword can make
# MariaDB's parser fail (a bare "*" does even in this mode), and a word too short to be indexed
# (innodb_ft_min_token_size, 3 by default) simply matches nothing.
_SEARCH = text(
    "SELECT hit.sender_id FROM ("
    "  SELECT sender_id, MATCH (story) AGAINST (:query IN NATURAL LANGUAGE MODE) AS score"
    "  FROM outbound WHERE MATCH (story) AGAINST (:query IN NATURAL LANGUAGE MODE)"
    f"  ORDER BY score DESC LIMIT {MAX_RANKED_POSTS}"
    ") AS hit GROUP BY hit.sender_id ORDER BY MAX(hit.score) DESC, hit.sender_id LIMIT :limit"
)
# Stopwords are fixed when the index is built; without them every word is searchable, as in FTS5.
_WITHOUT_STOPWORDS = text("SET SESSION innodb_ft_enable_stopword = OFF")
_CREATE = text(f"ALTER TABLE outbound ADD FULLTEXT INDEX {INDEX_NAME} (story)")


class FulltextSearch:
    """Full-text search inside the MySQL database itself: nothing else to run."""

    outbox_sinks = ()  # InnoDB indexes inside the post's transaction: nothing to deliver later
    index = None  # the FULLTEXT index is the table's own: InnoDB keeps it, nothing to rebuild

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._reader = Reader(engine)
        self._search = CompiledQuery(engine, _SEARCH)

    def create_schema(self) -> None:
        with self._engine.connect() as conn:
            indexes = inspect(conn).get_indexes("outbound")
            if not any(index["name"] == INDEX_NAME for index in indexes):
                conn.execute(_WITHOUT_STOPWORDS)
                conn.execute(_CREATE)

    def close(self) -> None:
        """Nothing of its own to close: it works through the feed's database engine."""

    def index_post(self, conn: Connection, post: Post) -> None:
        """Nothing to do: InnoDB updates the FULLTEXT index when the post's transaction commits."""

    def senders_matching(self, keywords: str, limit: int) -> list[int]:
        words = keywords_to_words(keywords)
        if not words:
            return []
        rows = self._reader.rows(self._search, {"query": " ".join(words), "limit": limit})
        return [sender_id for (sender_id,) in rows]

"""What the layers ask of each other, as protocols: the feed service and the composition depend
on these, never on a particular search engine, sink or listener."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection

from feedsvc.core.model import Post


@dataclass(frozen=True)
class OutboxRow:
    """One delivery a post's transaction left in the outbox table, as a sink receives it."""

    id: int
    key: str | None
    payload: bytes


class Sink(Protocol):
    """A system that outbox rows are delivered to, such as the search index or Kafka."""

    name: str  # the `sink` column value of its rows

    def deliver(self, rows: list[OutboxRow]) -> None:
        """Deliver rows in the order given; raise on failure, return only when all are acked."""


class PostListener(Protocol):
    """Something that must hear of every post, durably, inside the post's transaction."""

    def post_published(self, conn: Connection, post: Post, recipients: int) -> None: ...


class SearchIndex(Protocol):
    """An index kept apart from the posts, which `feedsvc reindex` can rebuild from them."""

    name: str

    def create(self) -> None:
        """Create the index if missing."""

    def recreate(self) -> None:
        """Drop and create the index again; searches see a partial index until it is refilled."""

    def index_posts(self, posts: Sequence[Post]) -> None:
        """Index posts; indexing a post again changes nothing."""

    def count(self) -> int:
        """How many posts the index holds."""


class SearchBackend(Protocol):
    """What the feed needs from a search engine."""

    # Background deliveries the backend needs from the outbox relay (none when it indexes inline).
    outbox_sinks: Sequence[Sink]
    # The index `feedsvc reindex` rebuilds; None when the database indexes its own rows.
    index: SearchIndex | None

    def create_schema(self) -> None:
        """Create the index structures if missing (run by init-db, never per request)."""

    def close(self) -> None:
        """Release connections of its own, so init-db in the gunicorn master leaves none to fork."""

    def index_post(self, conn: Connection, post: Post) -> None:
        """Index (or durably queue for indexing) a post inside the post's own transaction."""

    def senders_matching(self, keywords: str, limit: int) -> list[int]:
        """Ids of distinct senders whose posts match any keyword, best match first."""


class PerfSink(Protocol):
    """Where the request timing middleware hands each API request's record (the perf channel)."""

    def submit(self, started: float, route: int, duration: float) -> None: ...

"""Keyword search over stories: the backend is chosen by configuration, the rules are shared."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Connection
from sqlalchemy.engine import Engine

from feedsvc.config import Config
from feedsvc.model import Post

if TYPE_CHECKING:  # the outbox and the store need the database module, which needs this one
    from feedsvc.outbox import Sink
    from feedsvc.store import Store

# Keywords are words, never a query language: everything that is not a letter, digit or combining
# mark separates (a Devanagari or Thai word keeps its vowel signs; InnoDB indexes it whole).
# No cap on their number: the 200-character limit on keywords already bounds it.
_WORD_CATEGORIES = frozenset("LNM")
# Posts ranked before grouping by sender: enough for any page of senders in practice, bounded
# so that a very common word cannot make one search scan the whole table.
MAX_RANKED_POSTS = 10_000
# Posts read from the database and written to an index at a time by a rebuild.
REINDEX_BATCH_SIZE = 1000


def keywords_to_words(keywords: str) -> list[str]:
    """The distinct words of a search, lower-cased, in the order given."""
    spaced = "".join(
        char if unicodedata.category(char)[0] in _WORD_CATEGORIES else " " for char in keywords
    )
    return list(dict.fromkeys(spaced.lower().split()))


class SearchUnavailable(Exception):
    """The search engine did not answer in time; the client may retry later (HTTP 503)."""


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


def copy_posts(store: Store, index: SearchIndex, after: int = 0) -> Iterator[int]:
    """Index every post above `after` in id order, a batch at a time; yields the posts done."""
    done = 0
    while posts := store.posts_after(after, REINDEX_BATCH_SIZE):
        index.index_posts(posts)
        done += len(posts)
        after = posts[-1].id
        yield done


def reindex(store: Store, index: SearchIndex, *, recreate: bool) -> Iterator[tuple[int, int]]:
    """Copy every post into the index; yields (posts done, posts total) per batch."""
    if recreate:
        index.recreate()
    else:
        index.create()
    total = store.post_count()
    yield 0, total
    for done in copy_posts(store, index):
        yield done, max(total, done)


def create_search(config: Config, engine: Engine) -> SearchBackend:
    """The search backend this configuration asks for; only the chosen one is imported."""
    if config.search_urls:
        from feedsvc.search.elastic import ElasticSearch, create_client

        return ElasticSearch(create_client(config.search_urls), config.search_index)
    if config.is_sqlite:
        from feedsvc.search.embedded import EmbeddedSearch

        return EmbeddedSearch(engine, config.sqlite_synchronous)
    from feedsvc.search.mysql_fulltext import FulltextSearch

    return FulltextSearch(engine)

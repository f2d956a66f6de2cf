"""Keyword search over stories: the backend is chosen by configuration, the rules are shared."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Connection
from sqlalchemy.engine import Engine

from feedsvc.config import Config
from feedsvc.model import Post

if TYPE_CHECKING:  # the outbox needs the database module, which needs this one
    from feedsvc.outbox import Sink

# Keywords are words, never a query language: everything that is not a letter, digit or combining
# mark separates (a Devanagari or Thai word keeps its vowel signs; InnoDB indexes it whole).
# No cap on their number: the 200-character limit on keywords already bounds it.
_WORD_CATEGORIES = frozenset("LNM")
# Posts ranked before grouping by sender: enough for any page of senders in practice, bounded
# so that a very common word cannot make one search scan the whole table.
MAX_RANKED_POSTS = 10_000


def keywords_to_words(keywords: str) -> list[str]:
    """The distinct words of a search, lower-cased, in the order given."""
    spaced = "".join(
        char if unicodedata.category(char)[0] in _WORD_CATEGORIES else " " for char in keywords
    )
    return list(dict.fromkeys(spaced.lower().split()))


class SearchUnavailable(Exception):
    """The search engine did not answer in time; the client may retry later (HTTP 503)."""


class SearchBackend(Protocol):
    """What the feed needs from a search engine."""

    # Background deliveries the backend needs from the outbox relay (none when it indexes inline).
    outbox_sinks: Sequence[Sink]

    def create_schema(self) -> None:
        """Create the index structures if missing (run by init-db, never per request)."""

    def close(self) -> None:
        """Release connections of its own, so init-db in the gunicorn master leaves none to fork."""

    def index_post(self, conn: Connection, post: Post) -> None:
        """Index (or durably queue for indexing) a post inside the post's own transaction."""

    def senders_matching(self, keywords: str, limit: int) -> list[int]:
        """Ids of distinct senders whose posts match any keyword, best match first."""


def create_search(config: Config, engine: Engine) -> SearchBackend:
    """The search backend this configuration asks for; only the chosen one is imported."""
    if config.search_urls:
        from feedsvc.search.elastic import ElasticSearch, create_client

        return ElasticSearch(create_client(config.search_urls), config.search_index)
    if config.is_sqlite:
        from feedsvc.search.embedded import EmbeddedSearch

        return EmbeddedSearch(engine)
    from feedsvc.search.mysql_fulltext import FulltextSearch

    return FulltextSearch(engine)

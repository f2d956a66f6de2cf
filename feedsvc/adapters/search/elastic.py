"""Elasticsearch search: posts reach the index through the outbox, so posting never waits on it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson
from elasticsearch import ApiError, BadRequestError, Elasticsearch, NotFoundError, TransportError
from prometheus_client import Counter
from sqlalchemy import Connection

from feedsvc.adapters.outbox import enqueue
from feedsvc.core.model import Post
from feedsvc.core.protocols import OutboxRow, Sink
from feedsvc.core.search import SearchUnavailable, keywords_to_words
from feedsvc.core.wire import timestamp_text

log = logging.getLogger(__name__)

SINK_NAME = "search"
# A search answers, or fails as 503, well within 2 s: one attempt, one quick retry on refusal.
SEARCH_TIMEOUT_SECONDS = 1.5
MAX_RETRIES = 1
# Bulk writes run in the background; bounded well below the outbox lease (30 s).
BULK_TIMEOUT_SECONDS = 10.0
# Bulk item statuses worth retrying: the cluster is busy or broken, not the document.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

SETTINGS = {
    # Posts are searchable within a second: the relay's delay plus at most half a second here
    # (Elasticsearch's default, 1 s, skipped while the index gets no search, would not do).
    "refresh_interval": "500ms",
    # Tokenised like the embedded FTS5 index (unicode61, remove_diacritics): any run of letters
    # or digits is a word, case and accents folded, so both backends match the same posts.
    "analysis": {
        "tokenizer": {"words": {"type": "pattern", "pattern": r"[^\p{L}\p{N}]+"}},
        "analyzer": {
            "words": {
                "type": "custom",
                "tokenizer": "words",
                "filter": ["lowercase", "asciifolding"],
            }
        },
    },
}
MAPPINGS = {
    "dynamic": "strict",
    "properties": {
        "story": {"type": "text", "analyzer": "words"},
        # `sender.id` sorts ties by number, as the embedded backend does.
        "sender": {"type": "keyword", "fields": {"id": {"type": "long"}}},
        "occurred": {"type": "date"},
    },
}

REJECTED = Counter(
    "feed_search_rejected_documents", "Posts Elasticsearch refused to index (bad document)"
)


def create_client(urls: Sequence[str]) -> Elasticsearch:
    """The stock client with bounded waits; build it in the worker, after fork."""
    return Elasticsearch(
        list(urls),
        request_timeout=SEARCH_TIMEOUT_SECONDS,
        max_retries=MAX_RETRIES,
        retry_on_timeout=False,
    )


def document(post: Post) -> bytes:
    """The indexed form of a post; the post id is the document id, so indexing is idempotent."""
    return orjson.dumps(
        {
            "story": post.story,
            "sender": str(post.sender_id),
            "occurred": timestamp_text(post.occurred),
        }
    )


class ElasticIndex:
    """One index: its schema and bulk writes, shared by the relay and `feedsvc reindex`."""

    def __init__(self, client: Elasticsearch, name: str) -> None:
        self.client = client
        self.name = name

    def create(self) -> None:
        """Create the index with its mapping if missing; racing workers are fine."""
        if self.client.indices.exists(index=self.name):
            return
        try:
            self.client.indices.create(index=self.name, settings=SETTINGS, mappings=MAPPINGS)
        except BadRequestError as error:
            if error.error != "resource_already_exists_exception":
                raise

    def recreate(self) -> None:
        """Drop and create again after a mapping change; searches see a partial index meanwhile."""
        self.client.options(ignore_status=404).indices.delete(index=self.name)
        self.create()

    def bulk_index(self, documents: Sequence[tuple[str, bytes]]) -> None:
        """Index (id, JSON) pairs in one request; raises unless every retryable item succeeded."""
        operations: list[Any] = []
        for doc_id, body in documents:
            operations.append({"index": {"_index": self.name, "_id": doc_id}})
            operations.append(body)
        response = self.client.options(request_timeout=BULK_TIMEOUT_SECONDS).bulk(
            operations=operations
        )
        if not response["errors"]:
            return
        failed = [item["index"] for item in response["items"] if item["index"].get("error")]
        retryable = [item for item in failed if item["status"] in RETRYABLE_STATUSES]
        if retryable:
            raise TransportError(f"{len(retryable)} of {len(documents)} documents not indexed yet")
        for item in failed:
            # The document itself is bad: retrying would block every later post for nothing.
            log.error("search: post %s rejected by Elasticsearch: %s", item["_id"], item["error"])
        REJECTED.inc(len(failed))

    def index_posts(self, posts: Sequence[Post]) -> None:
        self.bulk_index([(str(post.id), document(post)) for post in posts])

    def missing(self, doc_ids: Sequence[str]) -> list[str]:
        """The ids among these that the index does not hold."""
        response = self.client.options(request_timeout=BULK_TIMEOUT_SECONDS).mget(
            index=self.name, ids=list(doc_ids), source=False
        )
        return [doc["_id"] for doc in response["docs"] if not doc.get("found")]

    def count(self) -> int:
        self.client.indices.refresh(index=self.name)
        return int(self.client.count(index=self.name)["count"])


class ElasticIndexSink:
    """Delivers outbox rows of the `search` sink to the index with the bulk API."""

    name = SINK_NAME

    def __init__(self, index: ElasticIndex) -> None:
        self._index = index
        self._index_ready = False

    def deliver(self, rows: list[OutboxRow]) -> None:
        if not self._index_ready:
            # The first delivery creates the index if init-db could not (cluster down at start).
            self._index.create()
            self._index_ready = True
        self._index.bulk_index([(str(row.key), row.payload) for row in rows])


class ElasticsearchSearch:
    """The search backend: writes go through the outbox, reads ask the cluster directly."""

    def __init__(self, client: Elasticsearch, index_name: str) -> None:
        self.index = ElasticIndex(client, index_name)
        self.outbox_sinks: tuple[Sink, ...] = (ElasticIndexSink(self.index),)

    def create_schema(self) -> None:
        try:
            self.index.create()
        except TransportError as error:
            # Start-up must not depend on the cluster: the relay creates the index when it returns.
            log.warning("search: Elasticsearch unreachable, index not created yet: %s", error)

    def close(self) -> None:
        self.index.client.close()

    def index_post(self, conn: Connection, post: Post) -> None:
        enqueue(conn, SINK_NAME, document(post), key=str(post.id))

    def senders_matching(self, keywords: str, limit: int) -> list[int]:
        words = keywords_to_words(keywords)
        if not words:
            return []
        try:
            response = self.index.client.search(
                index=self.index.name,
                # Words joined by spaces: a match query has no operators, every character is text.
                query={"match": {"story": " ".join(words)}},
                # One hit per sender, its best one, best senders first: the distinct sender list.
                collapse={"field": "sender"},
                sort=[{"_score": "desc"}, {"sender.id": "asc"}],
                size=limit,
                source=False,
                track_total_hits=False,
            )
        except NotFoundError:
            return []  # nothing was ever indexed
        except (TransportError, ApiError) as error:
            if isinstance(error, ApiError) and error.status_code < 500 and error.status_code != 429:
                raise
            raise SearchUnavailable("Elasticsearch did not answer the search") from error
        return [int(hit["fields"]["sender"][0]) for hit in response["hits"]["hits"]]

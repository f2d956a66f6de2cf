"""Rebuilding a search index from the posts: `feedsvc reindex`, and the embedded index at start."""

from collections.abc import Iterator

from feedsvc.adapters.store import Store
from feedsvc.core.protocols import SearchIndex

# Posts read from the database and written to an index at a time by a rebuild.
REINDEX_BATCH_SIZE = 1000


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

"""Reconciliation: posts that Elasticsearch acknowledged and then lost are found and sent again.

The outbox deletes a row once the cluster acknowledged it; a cluster that then loses the write
(a hard kill before its translog reached the disk, a restored snapshot) would leave the post
unsearchable for good. One worker per host (a lock file) compares the recent posts with the
index every FEED_SEARCH_RECONCILE_INTERVAL seconds and re-sends the missing ones;
`feedsvc reindex --since` does the same for any period.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from prometheus_client import Counter

from feedsvc.adapters.search.elastic import ElasticIndex, document
from feedsvc.adapters.store import Store

log = logging.getLogger(__name__)

# Posts are checked again on every run for this long after they were made.
LOOKBACK_SECONDS = 15 * 60.0
# In FEED_METRICS_DIR (a per-instance runtime directory): held by the host's reconciling worker.
LOCK_FILE = "search-reconcile.lock"
# Posts younger than this are left to the outbox, which is still delivering them.
SETTLE_SECONDS = 5.0
BATCH_SIZE = 1000

RESENT = Counter(
    "feed_search_reconciled_documents",
    "Posts found missing from Elasticsearch by reconciliation and sent to it again",
)


def resend_missing(
    store: Store, index: ElasticIndex, after_id: int, up_to_id: int | None = None
) -> Iterator[tuple[int, int]]:
    """Check the posts with ids in (after_id, up_to_id] against the index and send the missing
    ones again; yields the running (checked, re-sent) counts after each batch."""
    index.create()
    checked = resent = 0
    while posts := store.posts_after(after_id, BATCH_SIZE):
        if up_to_id is not None:
            posts = [post for post in posts if post.id <= up_to_id]
            if not posts:
                return
        missing = set(index.missing([str(post.id) for post in posts]))
        if missing:
            index.bulk_index([(str(p.id), document(p)) for p in posts if str(p.id) in missing])
        checked += len(posts)
        resent += len(missing)
        after_id = posts[-1].id
        yield checked, resent


class SearchReconciler:
    """A worker's background thread that re-sends recent posts missing from the index."""

    def __init__(
        self, store: Store, index: ElasticIndex, interval_seconds: float, lock_path: Path
    ) -> None:
        self._store = store
        self._index = index
        self._interval_seconds = interval_seconds
        self._lock_path = lock_path
        self._lock_file: IO[bytes] | None = None
        self._lock_warned = False
        # (monotonic time, newest post id then): where the look-back window starts and ends.
        self._newest_ids: deque[tuple[float, int]] = deque()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="search-reconcile", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def run_once(self) -> int:
        """One reconciliation if this worker is the host's reconciler; returns posts re-sent."""
        if not self._elected():
            return 0
        now = time.monotonic()
        self._newest_ids.append((now, self._store.newest_post_id()))
        while len(self._newest_ids) > 1 and self._newest_ids[1][0] <= now - LOOKBACK_SECONDS:
            self._newest_ids.popleft()
        settled = [newest for at, newest in self._newest_ids if at <= now - SETTLE_SECONDS]
        if not settled:
            return 0
        resent = 0
        window = (self._newest_ids[0][1], settled[-1])
        for _, resent_so_far in resend_missing(self._store, self._index, *window):
            RESENT.inc(resent_so_far - resent)  # counted batch by batch, in case one fails
            resent = resent_so_far
        if resent:
            log.warning("search: re-sent %d posts missing from Elasticsearch", resent)
        return resent

    def _run(self) -> None:
        self._newest_ids.append((time.monotonic(), self._newest_id_or_zero()))
        while not self._stopping.wait(self._interval_seconds):
            try:
                self.run_once()
            except Exception as error:  # the cluster or database is down: try next time
                log.warning(
                    "search: reconciliation failed, next try in %.0f s: %s",
                    self._interval_seconds,
                    error,
                )

    def _newest_id_or_zero(self) -> int:
        try:
            return self._store.newest_post_id()
        except Exception:
            return 0  # every post made from now on is checked

    def _elected(self) -> bool:
        """Whether this worker holds the host's reconciler lock (released when it dies)."""
        if self._lock_file is not None:
            return True
        try:
            lock_file = self._lock_path.open("ab")
        except OSError as error:
            if not self._lock_warned:
                self._lock_warned = True
                log.warning("search: no reconciliation here, no lock file: %s", error)
            return False
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            return False
        self._lock_file = lock_file
        return True

"""Lock conflicts and lost connections: a write transaction InnoDB rolled back runs again."""

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

log = logging.getLogger(__name__)

# Lock conflicts InnoDB resolves by rolling back: deadlock (whole transaction), lock wait timeout.
MYSQL_LOCK_CONFLICTS = frozenset({1213, 1205})
CONFLICT_ATTEMPTS = 5
CONFLICT_BACKOFF_S = 0.01

P = ParamSpec("P")
T = TypeVar("T")


def retry_transaction(write: Callable[P, T]) -> Callable[P, T]:
    """Run a write transaction again when InnoDB rolled it back to break a deadlock or lock wait,
    and once more when its connection turned out to be closed before the commit was sent."""

    @functools.wraps(write)
    def attempts(*args: P.args, **kwargs: P.kwargs) -> T:
        conflicts = 0
        reconnected = False
        while True:
            try:
                return write(*args, **kwargs)
            except OperationalError as error:
                if lost_before_commit(error) and not reconnected:
                    log.info("%s: connection lost (%s), retrying", write.__name__, error.orig)
                    reconnected = True
                    continue
                conflicts += 1
                if not is_lock_conflict(error) or conflicts == CONFLICT_ATTEMPTS:
                    raise
                log.info(
                    "%s: lock conflict (%s), attempt %d", write.__name__, error.orig, conflicts
                )
            time.sleep(random.uniform(0, CONFLICT_BACKOFF_S * 2**conflicts))

    return attempts


def lost_before_commit(error: DBAPIError) -> bool:
    """A statement found the connection closed: the server had already rolled the transaction back,
    so running it again cannot apply it twice (a COMMIT that failed carries no statement, and its
    outcome is unknown)."""
    return error.connection_invalidated and error.statement is not None


def is_lock_conflict(error: OperationalError) -> bool:
    args = getattr(error.orig, "args", ())
    return bool(args) and args[0] in MYSQL_LOCK_CONFLICTS

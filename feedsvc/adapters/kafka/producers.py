"""Producers that never hold up a worker's boot, and a close that never raises."""

import logging
from collections.abc import Sequence
from typing import Any

from kafka import KafkaProducer

log = logging.getLogger(__name__)

# Without a known api_version kafka-python probes the broker in the constructor and blocks for
# bootstrap_timeout_ms (30 s) when it is down, whatever max_block_ms says. Naming the version
# makes the constructor return at once; each connection still negotiates ApiVersions and
# clamps down to an older broker, so this is a ceiling, not a promise about the cluster.
API_VERSION = (3, 9)
CLOSE_TIMEOUT_SECONDS = 2.0
# kafka-python backs off reconnecting to a broker that is down up to 30 s by default: after an
# outage a producer could miss the broker's return that long while perf records expired. One
# attempt a second per producer costs a down broker nothing.
RECONNECT_BACKOFF_MAX_MS = 1000


def create_producer(bootstrap: Sequence[str], **settings: Any) -> KafkaProducer:
    """A producer for this worker; build it after fork, its network thread does not survive one."""
    return KafkaProducer(
        bootstrap_servers=list(bootstrap),
        api_version=API_VERSION,
        reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        **settings,
    )


def close_quietly(producer: KafkaProducer, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
    """Close, bounded; with the broker down close() raises KafkaTimeoutError, which is expected."""
    try:
        producer.close(timeout=timeout)
    except Exception as error:  # close() is the last step: its failure must not mask anything
        log.warning("kafka producer did not close cleanly: %s", error)

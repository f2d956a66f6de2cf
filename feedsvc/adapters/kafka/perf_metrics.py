"""The perf records' counters, apart from perf_channel: the master imports that module, and a
metric created in the master would map a metrics file that a full filesystem turns into SIGBUS.
"""

from prometheus_client import Counter, Gauge

from feedsvc.adapters.kafka.perf_channel import QUEUED_METRIC

PUBLISHED = Counter("feed_perf_records_published", "Perf records acknowledged by Kafka")
DROPPED = Counter(
    "feed_perf_records_dropped",
    "Perf records dropped: channel_full, channel_closed (by a worker); backlog, send_failed,"
    " publisher_exit (by the publisher, for a dead one by its successor)",
    ["reason"],
)
# The publisher's records not yet acknowledged by Kafka; those of a publisher that died are
# counted as dropped by its successor, so it is kept current record by record.
QUEUED = Gauge(
    QUEUED_METRIC,
    "Perf records the publisher holds, not yet acknowledged by Kafka",
    multiprocess_mode="livesum",
)

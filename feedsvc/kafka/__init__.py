"""Kafka, on only when FEED_KAFKA_BOOTSTRAP is set: perf records and post events, per worker.

Nothing here is imported without FEED_KAFKA_BOOTSTRAP. With it, each gunicorn worker builds,
after fork, two producers (kafka-python's network thread does not survive a fork):

Perf records, topic FEED_KAFKA_PERF_TOPIC (default `feed`), best effort
    One per API request, value `YYYY|MM|DD|HH|MI|entity|operation|duration_ms` (UTC minute the
    request started; entity participant|friends|inbound|outbound; operation get|post|search;
    whole milliseconds), no key, headers `host` and `pid` naming the worker. The request thread
    only does a non-blocking put on a bounded queue; a background thread owns the producer and
    is the only caller of send() (which blocks while topic metadata is unknown). When the queue
    or the producer's unacknowledged backlog is full, or Kafka fails a record, it is dropped and
    counted in feed_perf_records_dropped_total{reason}. A request never waits on Kafka.

Post events, topic FEED_KAFKA_EVENTS_TOPIC (default `feed.outbound`), at least once
    JSON `{"id", "from", "occurred", "subject", "story", "recipients"}` keyed by the sender id,
    so one sender's events share a partition and stay in order. The event is written to the
    outbox table (sink `events`) in the post's own transaction, so it exists exactly when the
    post does, and the outbox relay hands it to KafkaEventSink, which reports success only
    when the broker acknowledged every record of the batch. A broker outage only delays events;
    a retry after a failure may repeat some: consumers deduplicate on `id`.

How workers share the outbox (feedsvc.outbox): every worker runs a relay thread for the
`events` sink, but only the holder of the sink's lease (a row in `outbox_lease`: owner, expiry)
delivers. The holder takes a batch of rows in id order, calls KafkaEventSink.deliver(), and
deletes the rows only after it returned; it renews the lease while it works, releases it when
the backlog is empty, and on failure keeps rows and lease and retries with capped exponential
backoff. The others poll, are woken after a local post, and take the lease once it is free or
expired, so a dead or restarted worker's share is picked up after at most one lease period
(30 s), resending at most the batch it had in flight. One deliverer per sink means no race on
rows, no double sends between workers, and one sender's events leave in id order.
deliver() is bounded (about 15 s: a 5 s metadata wait plus a 10 s wait for acknowledgements),
well inside the lease, so a slow broker never makes two workers deliver the same batch.
"""

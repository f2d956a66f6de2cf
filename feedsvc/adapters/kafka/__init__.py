"""Kafka, on only when FEED_KAFKA_BOOTSTRAP is set: perf records and post events.

Nothing here is imported without FEED_KAFKA_BOOTSTRAP.

Perf records, topic FEED_KAFKA_PERF_TOPIC (default `feed`), best effort
    One per API request, value `YYYY|MM|DD|HH|MI|entity|operation|duration_ms` (UTC minute the
    request started; entity participant|friends|inbound|outbound; operation get|post|search;
    whole milliseconds), no key, headers `host` and `pid` naming the worker. Workers never touch
    Kafka for them: request_timing sends one datagram per request on the perf channel
    (perf_channel, created by the gunicorn master before it forks), without blocking; one
    publisher process per host (perf_publisher, supervised by the master: perf_supervisor)
    reads it and produces with kafka-python. A full channel, a backlog, a failed delivery or a
    publisher that exits with records in hand drop them, counted in
    feed_perf_records_dropped_total{reason}. A request never waits on Kafka.

Post events, topic FEED_KAFKA_EVENTS_TOPIC (default `feed.outbound`), at least once, per worker
    JSON `{"id", "from", "occurred", "subject", "story", "recipients"}` keyed by the sender id,
    so one sender's events share a partition and stay in order. The event is written to the
    outbox table (sink `events`) in the post's own transaction, so it exists exactly when the
    post does, and the outbox relay hands it to KafkaEventSink, which reports success only
    when the broker acknowledged every record of the batch. A broker outage only delays events;
    a retry after a failure may repeat some: consumers deduplicate on `id`.

How workers share the outbox (feedsvc.adapters.outbox): every worker runs a relay thread for the
`events` sink, but only the holder of the sink's lease (a row in `outbox_lease`: owner, expiry)
delivers. The holder takes a batch of rows in id order, calls KafkaEventSink.deliver(), and
deletes the rows only after it returned; it renews the lease while it works, releases it when
the backlog is empty, and on failure keeps rows and lease and retries with capped exponential
backoff; it gathers events for up to 0.25 s into one batch, since each batch costs far more than
an event. The others poll, look again a few times a second while rows wait, and take the lease
once it is free or expired, so a dead or restarted worker's share is picked up after at most one
lease period (30 s), resending at most the batch it had in flight. One deliverer per sink means
no race on rows, no double sends between workers, and one sender's events leave in id order.
deliver() is bounded (about 15 s: a 5 s metadata wait plus a 10 s wait for acknowledgements),
well inside the lease, so a slow broker never makes two workers deliver the same batch.
"""

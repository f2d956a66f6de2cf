"""A worker's service wired from the settings: engine, search, feed, app and outbox relay.

Every collaborator can be handed in instead (tests, benchmarks); what is not is built from the
configuration, exactly as a gunicorn worker builds it.
"""

import atexit
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from feedsvc.adapters import prometheus
from feedsvc.adapters.outbox import OutboxRelay
from feedsvc.adapters.store import Store
from feedsvc.api.app import App, create_app
from feedsvc.compose.search import create_search
from feedsvc.core.config import Config
from feedsvc.core.protocols import PostListener, SearchBackend, Sink
from feedsvc.db.engines import create_engine
from feedsvc.service.feed import Feed


@dataclass(frozen=True)
class Service:
    """One worker's app and the background relay that delivers what its posts left in the outbox."""

    app: App
    relay: OutboxRelay
    feed: Feed
    engine: Engine
    search: SearchBackend

    def close(self) -> None:
        """Stop the relay and release the connections (a test's or a benchmark's teardown)."""
        self.relay.stop()
        self.search.close()
        self.engine.dispose()


def build_service(
    config: Config,
    *,
    engine: Engine | None = None,
    search: SearchBackend | None = None,
    listeners: Sequence[PostListener] = (),
    middleware: Sequence[object] = (),
    start_relay: bool = True,
) -> Service:
    """The service of one worker; `listeners` and `middleware` come in addition to Kafka's, and
    `start_relay=False` leaves the outbox undelivered until the caller starts the relay."""
    prometheus.record_build_info()
    engine = engine or create_engine(config)
    prometheus.watch_pool(engine)
    listeners = list(listeners)
    middleware = list(middleware)
    if config.database_replica_urls:
        # Imported only here: without replicas every read runs on the primary, as it always did.
        from feedsvc.api.positions import ReadYourWrites
        from feedsvc.db.replicas import route_reads

        # Before the store and the search make their Readers, which take the engine's router.
        router = route_reads(config, engine)
        router.start()
        middleware.append(ReadYourWrites(router))
    search = search or create_search(config, engine)
    sinks: list[Sink] = list(search.outbox_sinks)
    held_polls: dict[str, float] = {}
    if config.kafka_bootstrap:
        # Imported only here: without FEED_KAFKA_BOOTSTRAP no Kafka code is even loaded.
        from feedsvc.compose.kafka import KafkaFeatures

        kafka = KafkaFeatures(config)
        # Registered before the relay's own exit hook, so it runs after the relay stopped.
        atexit.register(kafka.stop)
        listeners.append(kafka.post_events)
        if kafka.request_timing is not None:
            middleware.append(kafka.request_timing)
        sinks.append(kafka.event_sink)
        held_polls[kafka.event_sink.name] = kafka.event_sink.gather_seconds
    store = Store(engine)
    feed = Feed(store, search, listeners)
    relay = OutboxRelay(engine, sinks, held_poll_seconds_by_sink=held_polls)
    if start_relay:
        relay.start()
    if config.search_urls and config.search_reconcile_interval_s:
        # Imported only here, like the Elasticsearch backend it checks.
        from feedsvc.adapters.search.elastic import ElasticsearchSearch
        from feedsvc.adapters.search.reconcile import LOCK_FILE, SearchReconciler

        assert isinstance(search, ElasticsearchSearch)
        reconciler = SearchReconciler(
            store, search.index, config.search_reconcile_interval_s, config.metrics_dir / LOCK_FILE
        )
        reconciler.start()
        atexit.register(reconciler.stop)
    return Service(create_app(config, feed, middleware), relay, feed, engine, search)


def build_app(config: Config) -> App:
    return build_service(config).app

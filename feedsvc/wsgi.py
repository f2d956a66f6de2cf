"""Builds the real app from the environment; gunicorn calls get_app() in each worker, after fork."""

import atexit
from dataclasses import dataclass

import falcon

from feedsvc import metrics
from feedsvc.app import create_app
from feedsvc.config import Config
from feedsvc.database import create_engine
from feedsvc.feed import Feed, PostListener
from feedsvc.outbox import OutboxRelay, Sink
from feedsvc.search import create_search
from feedsvc.store import Store


@dataclass(frozen=True)
class Service:
    """One worker's app and the background relay that delivers what its posts left in the outbox."""

    app: falcon.App
    relay: OutboxRelay


def build_service(config: Config) -> Service:
    metrics.record_build_info()
    engine = create_engine(config)
    metrics.watch_pool(engine)
    listeners: list[PostListener] = []
    middleware: list[object] = []
    if config.database_replica_urls:
        # Imported only here: without replicas every read runs on the primary, as it always did.
        from feedsvc.replicas import route_reads
        from feedsvc.resources.positions import ReadYourWrites

        # Before the store and the search make their Readers, which take the engine's router.
        router = route_reads(config, engine)
        router.start()
        middleware.append(ReadYourWrites(router))
    search = create_search(config, engine)
    sinks: list[Sink] = list(search.outbox_sinks)
    held_polls: dict[str, float] = {}
    if config.kafka_bootstrap:
        # Imported only here: without FEED_KAFKA_BOOTSTRAP no Kafka code is even loaded.
        from feedsvc.kafka.features import KafkaFeatures

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
    relay.start()
    if config.search_urls and config.search_reconcile_interval_s:
        # Imported only here, like the Elasticsearch backend it checks.
        from feedsvc.search.elastic import ElasticSearch
        from feedsvc.search.reconcile import LOCK_FILE, SearchReconciler

        assert isinstance(search, ElasticSearch)
        reconciler = SearchReconciler(
            store, search.index, config.search_reconcile_interval_s, config.metrics_dir / LOCK_FILE
        )
        reconciler.start()
        atexit.register(reconciler.stop)
    return Service(create_app(config, feed, middleware), relay)


def build_app(config: Config) -> falcon.App:
    return build_service(config).app


def get_app() -> falcon.App:
    return build_app(Config.from_env())

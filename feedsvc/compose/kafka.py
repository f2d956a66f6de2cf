"""Everything Kafka adds to one worker, built from the config in one place."""

import logging

from feedsvc.adapters.kafka import perf_channel
from feedsvc.adapters.kafka.events import KafkaEventSink, PostEvents
from feedsvc.adapters.kafka.perf_sink import ChannelSink
from feedsvc.api.request_timing import RequestTiming
from feedsvc.core.config import Config

log = logging.getLogger(__name__)


class KafkaFeatures:
    """What Kafka adds to one worker: request timing onto the perf channel, and post events."""

    def __init__(self, config: Config) -> None:
        channel = perf_channel.inherited()
        # The channel comes from the gunicorn master (config/gunicorn.conf.py), which also runs
        # the publisher; an app served any other way has no one to hand its records to.
        self.request_timing = RequestTiming(ChannelSink(channel.sender)) if channel else None
        if channel is None and config.kafka_perf_records:
            log.warning("perf records are off: no perf publisher runs beside this process")
        self.post_events = PostEvents()
        self.event_sink = KafkaEventSink(config.kafka_bootstrap, config.kafka_events_topic)

    def stop(self) -> None:
        self.event_sink.close()

"""Everything Kafka adds to one worker, built from the config in one place."""

import logging

from feedsvc.config import Config
from feedsvc.kafka import perf_channel
from feedsvc.kafka.events import KafkaEventSink, PostEvents
from feedsvc.kafka.request_timing import RequestTiming

log = logging.getLogger(__name__)


class KafkaFeatures:
    """What Kafka adds to one worker: request timing onto the perf channel, and post events."""

    def __init__(self, config: Config) -> None:
        channel = perf_channel.inherited()
        # The channel comes from the gunicorn master (config/gunicorn.conf.py), which also runs
        # the publisher; an app served any other way has no one to hand its records to.
        self.request_timing = (
            RequestTiming(perf_channel.ChannelSink(channel.sender)) if channel else None
        )
        if channel is None and config.kafka_perf_records:
            log.warning("perf records are off: no perf publisher runs beside this process")
        self.post_events = PostEvents()
        self.event_sink = KafkaEventSink(config.kafka_bootstrap, config.kafka_events_topic)

    def stop(self) -> None:
        self.event_sink.close()

"""Everything Kafka adds to one worker, built from the config in one place."""

from feedsvc.config import Config
from feedsvc.kafka.events import KafkaEventSink, PostEvents
from feedsvc.kafka.perf_publisher import PerfPublisher
from feedsvc.kafka.request_timing import RequestTiming


class KafkaFeatures:
    """What Kafka adds to one worker: request timing, post events, and the threads behind them."""

    def __init__(self, config: Config) -> None:
        self._perf = PerfPublisher(config.kafka_bootstrap, config.kafka_perf_topic)
        self.request_timing = RequestTiming(self._perf)
        self.post_events = PostEvents()
        self.event_sink = KafkaEventSink(config.kafka_bootstrap, config.kafka_events_topic)

    def start(self) -> None:
        self._perf.start()

    def stop(self) -> None:
        self._perf.stop()
        self.event_sink.close()

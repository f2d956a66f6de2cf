"""A worker's end of the perf channel, apart from perf_channel: it counts drops in a metric, and
the master, which imports perf_channel, must create no metric (feedsvc.adapters.metrics_files)."""

import os
import socket

from feedsvc.adapters.kafka.perf_channel import RECORD
from feedsvc.adapters.kafka.perf_metrics import DROPPED


class ChannelSink:
    """The worker's side: one non-blocking send per request, or a counted drop."""

    def __init__(self, sender: socket.socket) -> None:
        self._send = sender.send
        self._pack = RECORD.pack
        self._pid = os.getpid()
        self._dropped_full = DROPPED.labels("channel_full")
        self._dropped_closed = DROPPED.labels("channel_closed")

    def submit(self, started: float, route: int, duration: float) -> None:
        try:
            self._send(self._pack(self._pid, started, duration, route))
        except BlockingIOError:
            self._dropped_full.inc()
        except OSError:
            self._dropped_closed.inc()

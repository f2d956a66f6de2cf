"""The local channel from the request workers to the host's perf publisher: a datagram per request.

The gunicorn master creates it before it forks (config/gunicorn.conf.py), so every worker
inherits the sending end and the publisher process the receiving one. The master keeps both
ends open: records wait in the kernel while the publisher restarts, and the publisher sees the
end of the stream only when the master and every worker have closed the sending end.
No Kafka code and no metric here: the master and the workers import this module, only the
publisher needs Kafka, and the master must map no metrics file (feedsvc.adapters.metrics_files).
"""

import socket
import struct

# worker pid, request start (epoch seconds), duration (seconds), index into ROUTES
RECORD = struct.Struct("<IddB")
# The (entity, operation) of each kind of API request, numbered by position on the channel.
ROUTES: tuple[tuple[str, str], ...] = (
    ("participant", "post"),
    ("participant", "get"),
    ("friends", "get"),
    ("friends", "post"),
    ("outbound", "get"),
    ("outbound", "post"),
    ("inbound", "get"),
    ("outbound", "search"),
)
# Asked of the kernel for the records waiting for the publisher (capped at net.core.wmem_max;
# README, Kafka: how many records that holds).
SEND_BUFFER_BYTES = 4 * 1024 * 1024
# A stopping publisher gives Kafka this long to acknowledge what it read; the master waits a
# little longer before it kills it.
PUBLISHER_FLUSH_SECONDS = 5.0

# The gauge of the records a publisher holds (perf_metrics); the master reads a dead one's.
QUEUED_METRIC = "feed_perf_records_queued"


class PerfChannel:
    """A SOCK_SEQPACKET pair: records stay whole, and the reader sees EOF when all senders left."""

    def __init__(self) -> None:
        self.sender, self.receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        # A full buffer (publisher absent or behind) must fail the send, never wait.
        self.sender.setblocking(False)


_inherited: PerfChannel | None = None


def create_for_workers() -> PerfChannel:
    """In the master, before it forks: the channel its workers will find with inherited()."""
    global _inherited
    if _inherited is None:
        _inherited = PerfChannel()
    return _inherited


def inherited() -> PerfChannel | None:
    """In a worker: the master's channel, or None when the master did not start a publisher."""
    return _inherited

"""A database across a link with real latency: a private mariadbd behind delaying proxies.

Benchmarks set it up and tear it down themselves; the 0 ms link runs through the same proxy, so
a ratio against it compares like with like (the proxy's CPU is on both sides).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import MySQLdb

from loadtest.delayproxy import DelayProxy
from loadtest.harness.mariadb import PrivateMariadb, ScratchMariadb

CALIBRATION_PINGS = 200


@dataclass
class RemoteLink:
    """One RTT's way to the private server: its proxy, and databases reached through it."""

    rtt_ms: float
    server: PrivateMariadb
    proxy: DelayProxy

    @property
    def label(self) -> str:
        return f"mariadb rtt {self.rtt_ms:g}ms"

    def database(self, name: str) -> str:
        """A new empty database on the server; its URL goes through this link's proxy."""
        self.server.create_database(name)
        return self.server.database_url(name, port=self.proxy.port)

    def measured_rtt_ms(self) -> float:
        """Median time of a MySQL ping through the proxy: the link's real round trip."""
        connection = MySQLdb.connect(host=self.proxy.host, port=self.proxy.port, user="root")
        try:
            samples = []
            for _ in range(CALIBRATION_PINGS):
                began = time.perf_counter()
                connection.ping()
                samples.append(time.perf_counter() - began)
        finally:
            connection.close()
        return statistics.median(samples) * 1000.0


def parse_rtts(text: str) -> list[float]:
    """`0,0.5,1` -> [0.0, 0.5, 1.0]; refuses negatives and duplicates."""
    rtts = [float(part) for part in text.split(",") if part.strip()]
    if any(rtt < 0 for rtt in rtts) or len(set(rtts)) != len(rtts):
        raise ValueError(f"RTTs must be distinct and not negative, got {text!r}")
    return rtts


@contextlib.contextmanager
def remote_links(rtts: Sequence[float]) -> Iterator[list[RemoteLink]]:
    """One private mariadbd and a proxy per RTT, all stopped and removed on exit."""
    with ScratchMariadb() as server, contextlib.ExitStack() as stack:
        target = ("127.0.0.1", server.port)
        yield [
            RemoteLink(rtt, server, stack.enter_context(DelayProxy(target, rtt))) for rtt in rtts
        ]

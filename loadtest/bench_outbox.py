"""Post latency with Elasticsearch up vs down, then how fast the outbox drains when it returns.

Usage: .venv/bin/python -m loadtest.bench_outbox [--posts 2000] [--workers 2]
Starts a noida-db Elasticsearch-API server and a real gunicorn (config/gunicorn.conf.py) with
FEED_SEARCH_URL set, posts sequentially with the cluster up, stops the cluster, posts again,
restarts it and times the backlog drain. Everything runs in a temporary directory.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from feedsvc.adapters import outbox
from feedsvc.adapters.search.elastic import SINK_NAME, ElasticIndex, create_client
from feedsvc.core.config import Config
from feedsvc.db import engines
from loadtest.harness.elastic import ElasticServer
from loadtest.harness.gunicorn import GunicornServer, request
from loadtest.report import format_table, percentile

DRAIN_TIMEOUT_SECONDS = 600.0
SAMPLE_SECONDS = 0.01


def post_many(port: int, sender_link: str, count: int, tag: str) -> list[float]:
    """Sequential posts; returns each one's latency in milliseconds (all must answer 200)."""
    latencies = []
    for number in range(count):
        body = {"subject": tag, "story": f"{tag} story {number} about the outbox"}
        started = time.perf_counter()
        response = request(port, "POST", f"{sender_link}/outbound", body)
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            raise SystemExit(f"post answered {response.status}: {response.body[:200]!r}")
    return sorted(latencies)


def backlog(config: Config, sink: str = SINK_NAME) -> int:
    engine = engines.create_engine(config)
    try:
        return outbox.backlog(engine, sink)
    finally:
        engine.dispose()


def wait_drained(config: Config) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while backlog(config):
        if time.monotonic() > deadline:
            raise SystemExit("the backlog did not drain")
        time.sleep(SAMPLE_SECONDS)


def time_drain(config: Config, sink: str = SINK_NAME) -> tuple[int, float, float]:
    """(rows queued, seconds until delivery began, seconds from then until the outbox was empty).

    Delivery "began" at the last sample that still saw the whole backlog, so the drain time is
    an upper bound to within one sample.
    """
    restarted = time.monotonic()
    queued = backlog(config, sink)
    last_full = restarted
    while backlog(config, sink) >= queued:
        last_full = time.monotonic()
        if last_full - restarted > DRAIN_TIMEOUT_SECONDS:
            raise SystemExit("the backlog did not start draining")
        time.sleep(SAMPLE_SECONDS)
    while backlog(config, sink):
        if time.monotonic() - restarted > DRAIN_TIMEOUT_SECONDS:
            raise SystemExit("the backlog did not drain")
        time.sleep(SAMPLE_SECONDS)
    return queued, last_full - restarted, time.monotonic() - last_full


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=2000, help="posts per phase")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    args = parser.parse_args(argv)

    directory = Path(tempfile.mkdtemp(prefix="feedsvc-bench-outbox-"))
    elastic = ElasticServer(directory)
    elastic.start()
    env = {
        "FEED_DATA_DIR": str(directory / "data"),
        "FEED_SEARCH_URL": elastic.url,
        "FEED_SEARCH_INDEX": "feed-bench",
    }
    config = Config.from_env(env)
    server = GunicornServer()
    try:
        server.serve(env, args.workers)
        sender_link = request(server.port, "POST", "/participant", {"name": "Bench"}).json["link"]
        up = post_many(server.port, sender_link, args.posts, "up")
        # The emulator can acknowledge a bulk after SIGINT and then not persist it: stop it idle.
        wait_drained(config)
        elastic.stop()
        down = post_many(server.port, sender_link, args.posts, "down")
        elastic.start()
        queued, recovery, drain = time_drain(config)
        index = ElasticIndex(create_client(config.search_urls), config.search_index)
        documents = index.count()
    finally:
        server.stop()
        elastic.stop()
        shutil.rmtree(directory, ignore_errors=True)

    rows = [
        (f"Elasticsearch {name}", len(samples), sum(samples) / len(samples),
         percentile(samples, 50), percentile(samples, 95), percentile(samples, 99))
        for name, samples in (("up", up), ("down", down))
    ]  # fmt: skip
    print(format_table(("post latency", "posts", "mean ms", "p50 ms", "p95 ms", "p99 ms"), rows))
    print(f"backlog after the outage: {queued} posts")
    print(f"first delivery {recovery:.1f} s after the cluster returned (relay backoff)")
    print(f"drain: {queued} posts in {drain:.2f} s = {queued / drain:.0f} docs/s")
    print(f"index holds {documents} documents for {2 * args.posts} posts")
    return 0 if documents == 2 * args.posts else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Search freshness under post load: the time from a post's 200 to the first search finding it.

Usage: .venv/bin/python -m loadtest.freshness [--rate 100] [--seconds 30] [--workers 2]
Starts a real gunicorn (config/gunicorn.conf.py, the embedded SQLite default unless FEED_*
variables say otherwise), seeds the load test's world, then posts at `--rate` posts per second
(paced from a schedule: a late post is sent at once and timed from its slot, never skipped)
while a prober posts a story with a word of its own `--probes` times a second and searches for
every unfound probe each `--poll-ms`. Freshness is measured to the answer of the first search
that lists the probe's sender, so it is rounded up by at most one poll and one search.
"""

from __future__ import annotations

import argparse
import http.client
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from loadtest.harness.gunicorn import GunicornServer
from loadtest.report import format_table, percentile
from loadtest.scenarios import STORY_WORDS, SUBJECT_WORDS, link, words
from loadtest.world import seed_world

# A probe not found this long after its 200 counts as lost (the promise is one second).
GIVE_UP_SECONDS = 30.0


@dataclass
class PostLoad:
    """Background posters and what they measured."""

    latencies_ms: list[float] = field(default_factory=list)
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def connect(port: int) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def send(
    connection: http.client.HTTPConnection, method: str, path: str, body: object = None
) -> tuple[int, Any]:
    """One request on a keep-alive connection: (status, decoded JSON body or None)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection.request(method, path, orjson.dumps(body) if body is not None else None, headers)
    response = connection.getresponse()
    payload = response.read()
    return response.status, orjson.loads(payload) if payload else None


def post_at_rate(
    port: int,
    senders: tuple[int, ...],
    interval: float,
    start: float,
    stop: float,
    seed: int,
    load: PostLoad,
) -> None:
    """Posts on a fixed schedule, each timed from its scheduled moment (no coordinated omission)."""
    rng = random.Random(seed)
    connection = connect(port)
    slot = start
    try:
        while slot < stop:
            pause = slot - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            story = {"subject": words(rng, SUBJECT_WORDS), "story": words(rng, STORY_WORDS)}
            status, _ = send(connection, "POST", f"{link(rng.choice(senders))}/outbound", story)
            latency_ms = (time.monotonic() - slot) * 1000
            with load.lock:
                load.latencies_ms.append(latency_ms)
                load.failures += status != 200
            slot += interval
    finally:
        connection.close()


def probe(
    port: int, sender: int, probes_per_second: float, poll_seconds: float, stop: float
) -> tuple[list[float], int]:
    """Probe posts and searches for them: (freshness of each found probe in ms, probes lost)."""
    connection = connect(port)
    pending: dict[str, float] = {}
    freshness_ms: list[float] = []
    lost = 0
    next_probe = time.monotonic()
    number = 0
    try:
        while pending or time.monotonic() < stop:
            now = time.monotonic()
            if now < stop and now >= next_probe:
                word = f"fresh{number}probe"
                number += 1
                status, _ = send(
                    connection, "POST", f"{link(sender)}/outbound", {"subject": "p", "story": word}
                )
                if status != 200:
                    raise SystemExit(f"probe post answered {status}")
                pending[word] = time.monotonic()
                next_probe += 1 / probes_per_second
            for word, acknowledged in list(pending.items()):
                _, found = send(connection, "GET", f"/outbound?keywords={quote(word)}")
                answered = time.monotonic()
                if found:
                    freshness_ms.append((answered - acknowledged) * 1000)
                    del pending[word]
                elif answered - acknowledged > GIVE_UP_SECONDS:
                    lost += 1
                    del pending[word]
            time.sleep(poll_seconds)
    finally:
        connection.close()
    return freshness_ms, lost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="background posts per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the timed phase")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--posters", type=int, default=4, help="background posting threads")
    parser.add_argument("--probes", type=float, default=5.0, help="probe posts per second")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="pause between search rounds")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    with GunicornServer().serve({}, args.workers) as server:
        world = seed_world(server.host, server.port, random.Random(args.seed))
        connection = connect(server.port)
        _, prober = send(connection, "POST", "/participant", {"name": "freshness prober"})
        connection.close()
        load = PostLoad()
        start = time.monotonic() + 0.5
        stop = start + args.seconds
        interval = args.posters / args.rate
        posters = [
            threading.Thread(
                target=post_at_rate,
                args=(
                    server.port,
                    world.participant_ids,
                    interval,
                    start + n * interval / args.posters,
                    stop,
                    args.seed + n,
                    load,
                ),
                daemon=True,
            )
            for n in range(args.posters)
        ]
        for poster in posters:
            poster.start()
        freshness_ms, lost = probe(
            server.port, prober["id"], args.probes, args.poll_ms / 1000, stop
        )
        for poster in posters:
            poster.join()

    freshness_ms.sort()
    load.latencies_ms.sort()
    print(
        format_table(
            ("measure", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"),
            [
                (
                    "search freshness",
                    len(freshness_ms),
                    *(f"{percentile(freshness_ms, p):.1f}" for p in (50, 90, 99)),
                    f"{freshness_ms[-1]:.1f}" if freshness_ms else "-",
                ),
                (
                    "post latency",
                    len(load.latencies_ms),
                    *(f"{percentile(load.latencies_ms, p):.1f}" for p in (50, 90, 99)),
                    f"{load.latencies_ms[-1]:.1f}" if load.latencies_ms else "-",
                ),
            ],
        )
    )
    print(
        f"{args.workers} workers ({server.worker_class}), {args.rate:.0f} posts/s offered for "
        f"{args.seconds:.0f} s: {len(load.latencies_ms) / args.seconds:.0f} posts/s sent, "
        f"{load.failures} failed; probes lost (not found within {GIVE_UP_SECONDS:.0f} s): {lost}"
    )
    return 1 if lost or load.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Kafka's cost on the request path, side by side in one run, and the outbox drain after an outage.

python -m loadtest.kafka_compare [-d 10] [-c 16] [-r 2] [-w WORKERS] [-m classic]

Boots three identical servers on the embedded default: Kafka off, Kafka on with a Tansu broker
up, and Kafka on with its broker down (nothing listens at its bootstrap address). Rounds of
`python -m loadtest` interleave the three so a noisy neighbour hits each alike. Then the broker
of the third comes up at that address, and the events its outbox collected meanwhile are timed
until the outbox is empty: the drain rate after an outage.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from feedsvc.config import Config
from feedsvc.kafka.events import SINK_NAME
from loadtest.bench_outbox import time_drain
from tests.support.kafka import TansuBroker, tansu_binary
from tests.support.processes import GunicornServer, free_port

SETTINGS = ("off", "up", "down")


@dataclass
class Measured:
    """One server under test and the totals of each of its load rounds."""

    setting: str
    server: GunicornServer
    data_dir: Path
    rounds: list[dict] = field(default_factory=list)

    def mean(self, name: str) -> float:
        return statistics.fmean(float(total[name]) for total in self.rounds)

    @property
    def errors(self) -> int:
        return sum(int(total["errors"]) for total in self.rounds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.kafka_compare", description=__doc__)
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds per round")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="simulated users")
    parser.add_argument("-r", "--rounds", type=int, default=2, help="rounds per setting")
    parser.add_argument("-w", "--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("-m", "--mode", default="classic", help="loadtest mode (posts included)")
    return parser


def load_round(server: GunicornServer, args: argparse.Namespace, report: Path) -> dict:
    """One `python -m loadtest` run; its total line as a dict."""
    command = [
        sys.executable, "-m", "loadtest", f"127.0.0.1:{server.port}", "-m", args.mode,
        "-c", str(args.concurrency), "-d", str(args.duration), "-q", "--json", str(report),
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return orjson.loads(report.read_bytes())["operations"][-1]


def drain(broker: TansuBroker, events_topic: str, data_dir: Path) -> str:
    """Bring the broker back and time the outbox of events until it is empty."""
    broker.start()
    broker.add_topic(events_topic, partitions=3)
    queued, waited, seconds = time_drain(
        Config.from_env({"FEED_DATA_DIR": str(data_dir)}), SINK_NAME
    )
    return (
        f"outbox after the outage: {queued} events; delivery began {waited:.2f} s after the"
        f" broker returned (relay backoff), then drained in {seconds:.2f} s"
        f" = {queued / max(seconds, 1e-9):.0f} events/s"
    )


def table(measured: list[Measured]) -> str:
    base = measured[0].mean("rpm")
    lines = [f"{'kafka':<6} {'req/s':>9} {'vs off':>7} {'p50 ms':>7} {'p95 ms':>7} {'errors':>7}"]
    for m in measured:
        lines.append(
            f"{m.setting:<6} {m.mean('rpm') / 60:>9.0f} {m.mean('rpm') / base:>7.1%}"
            f" {m.mean('p50_ms'):>7.2f} {m.mean('p95_ms'):>7.2f} {m.errors:>7}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="feedsvc-kafka-")))
        broker = TansuBroker(tansu_binary(), root / "tansu.log")
        broker.start()
        stack.callback(broker.stop)
        perf_topic, events_topic = broker.create_topic("feed", 3), broker.create_topic("events", 3)
        # The third server's broker: down during the load, started at this address to drain.
        outage = TansuBroker(tansu_binary(), root / "tansu-outage.log", port=free_port())
        stack.callback(outage.stop)
        bootstrap = {"off": None, "up": broker.bootstrap, "down": outage.bootstrap}
        measured = []
        for setting in SETTINGS:
            data_dir = root / setting
            env = {"FEED_DATA_DIR": str(data_dir)}
            if bootstrap[setting]:
                env |= {
                    "FEED_KAFKA_BOOTSTRAP": bootstrap[setting],
                    "FEED_KAFKA_PERF_TOPIC": perf_topic,
                    "FEED_KAFKA_EVENTS_TOPIC": events_topic,
                }
            server = GunicornServer(root / f"gunicorn-{setting}.log")
            stack.callback(server.kill)
            server.start(env, workers=args.workers)
            server.wait_ready(workers=args.workers)
            measured.append(Measured(setting, server, data_dir))
        for number in range(args.rounds):
            for m in measured:
                print(f"round {number + 1}/{args.rounds}: kafka {m.setting}", file=sys.stderr)
                m.rounds.append(load_round(m.server, args, root / "report.json"))
        print(table(measured))
        print(drain(outage, events_topic, measured[-1].data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())

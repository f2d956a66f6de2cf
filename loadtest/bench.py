"""Side-by-side benchmark: each operation as a ratio of a bare hello-JSON ceiling, in one run.

python -m loadtest.bench [--worker-classes meinheld,gthread,sync] [--database-url URL ...]
    [--db-rtt-ms 0,0.5,1]
Every server is booted first; rounds then interleave all (server, operation) pairs so a noisy
neighbour or a warming cache hits every pair alike. Rounds are closed-loop (maximum throughput);
the half-rate pass is open-loop at half of each pair's maximum, latency from each scheduled time.
--db-rtt-ms adds, beside the other backends, a private mariadbd reached through a delaying proxy
per RTT (0 ms: the same proxy, no delay), set up and torn down by the benchmark.
--replicas 0,1 adds a private MariaDB primary with one GTID replica, also set up and torn down
here, served with 0 and with 1 replica (FEED_DATABASE_REPLICA_URLS); each round also counts the
statements per request each of the two servers received (its Questions and pings).
--baseline DIR adds, beside every feed server, the same server booted from another build (a
checkout with its own .venv, e.g. `git worktree add DIR REV && DIR/scripts/setup`): a
regression check of this build against an older one, in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from feedsvc.core.config import default_workers
from loadtest.delayproxy import DelayProxy
from loadtest.generator import LoadPlan, LoadResult, ProgressLine, run_load
from loadtest.harness.gunicorn import HELLO_APP, GunicornServer, ServerError, backend_label
from loadtest.harness.mariadb import PrivateMariadb, ScratchReplicatedMariadb
from loadtest.machine import describe_machine, machine_line
from loadtest.remote import parse_rtts, remote_links
from loadtest.report import cpu_share, format_table
from loadtest.scenarios import MODES, MODES_NEEDING_WORLD, SINGLE_OPERATION_MODES, World
from loadtest.world import SeedError, seed_world

CEILING = "hello"
SINGLE = "single"
DEFAULT_OPERATIONS = ("hello", "get-participant", "get-inbound", "post-outbound", "search")


@dataclass
class Pair:
    """One measured line: an operation against one server, with every round's result."""

    worker_class: str
    backend: str
    mode: str
    server: GunicornServer
    world: World
    proxy: DelayProxy | None = None
    rounds: list[LoadResult] = field(default_factory=list)
    worker_us_per_request: list[float] = field(default_factory=list)
    proxy_shares: list[float] = field(default_factory=list)
    half_rate: LoadResult | None = None
    # Servers whose received statements are counted around each round, by label.
    counted: dict[str, PrivateMariadb] = field(default_factory=dict)
    statements_per_request: dict[str, list[float]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.worker_class}/{self.backend}/{self.mode}"

    @property
    def throughput(self) -> float:
        return statistics.fmean(result.total.per_second for result in self.rounds)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(result.total, attribute) for result in self.rounds)

    @property
    def errors(self) -> int:
        return sum(result.total.errors for result in self.rounds)

    @property
    def spread(self) -> float:
        """Max-min over mean of the rounds' throughput: how much to trust the ratio."""
        rates = [result.total.per_second for result in self.rounds]
        return (max(rates) - min(rates)) / statistics.fmean(rates) if any(rates) else 0.0

    @property
    def generator_cpu_share(self) -> float:
        return statistics.fmean(result.generator_cpu_share for result in self.rounds)

    @property
    def worker_us(self) -> float:
        """Median over rounds of the workers' CPU per answered request (from /proc)."""
        return statistics.median(self.worker_us_per_request)

    @property
    def proxy_share(self) -> float | None:
        return statistics.fmean(self.proxy_shares) if self.proxy_shares else None


def short_class(worker_class: str) -> str:
    """meinheld.gmeinheld.MeinheldWorker -> MeinheldWorker: keeps the table narrow."""
    return worker_class.rsplit(".", 1)[-1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    parser.add_argument(
        "-w",
        "--workers",
        type=int,
        default=default_workers(is_sqlite=True),
        help="gunicorn workers per server",
    )
    parser.add_argument(
        "-k", "--worker-classes", default="",
        help="comma-separated FEED_WORKER_CLASS values to compare (default: the config's default)",
    )  # fmt: skip
    parser.add_argument(
        "--database-url", action="append", default=[],
        help="FEED_DATABASE_URL of a backend to compare (repeatable; default: embedded SQLite)",
    )  # fmt: skip
    parser.add_argument(
        "--db-rtt-ms", type=parse_rtts, default=[],
        help="comma-separated RTTs: a private MariaDB behind a delaying proxy per RTT",
    )  # fmt: skip
    parser.add_argument(
        "--replicas", type=parse_replica_counts, default=[],
        help="0,1: a private MariaDB primary and replica, served with 0 and with 1 replica",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", type=Path,
        help="a checkout of another feedsvc build (scripts/setup done there) to compare beside",
    )  # fmt: skip
    parser.add_argument(
        "-o", "--operations", default=",".join(DEFAULT_OPERATIONS),
        help=f"comma-separated modes; {CEILING!r} is the ceiling; {SINGLE!r}: every one-request"
        f" mode, for worker CPU per request with -w 1 (choices: {', '.join(MODES)})",
    )  # fmt: skip
    parser.add_argument("-r", "--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds per round")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="simulated users")
    parser.add_argument("-p", "--processes", type=int, default=0, help="generator processes")
    parser.add_argument(
        "--no-half-rate", dest="half_rate", action="store_false",
        help="skip the second pass that measures latency at half of each pair's max throughput",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every figure as JSON here")
    return parser


def parse_replica_counts(text: str) -> list[int]:
    """`0,1` -> [0, 1]: how many replicas to serve with (the benchmark's pair has one)."""
    counts = [int(part) for part in text.split(",") if part.strip()]
    if any(count not in (0, 1) for count in counts) or len(set(counts)) != len(counts):
        raise ValueError(f"replica counts must be distinct, 0 or 1, got {text!r}")
    return counts


@dataclass(frozen=True)
class Backend:
    label: str
    database_url: str | None  # None: the embedded SQLite
    proxy: DelayProxy | None = None
    fresh_database: Callable[[str], str] | None = None  # per server, for the remote links
    # The same database on a replica, for FEED_DATABASE_REPLICA_URLS.
    replica_database: Callable[[str], str] | None = None
    counted: dict[str, PrivateMariadb] = field(default_factory=dict)


def backends(args: argparse.Namespace, stack: contextlib.ExitStack) -> list[Backend]:
    """The given backends (default SQLite), then one remote MariaDB per --db-rtt-ms value."""
    chosen = [Backend(backend_label(url), url) for url in args.database_url or [None]]
    if args.db_rtt_ms:
        say(f"starting a private mariadbd and delaying proxies ({args.db_rtt_ms} ms) ...")
        for link in stack.enter_context(remote_links(args.db_rtt_ms)):
            say(f"  {link.label}: measured ping {link.measured_rtt_ms():.3f} ms")
            chosen.append(Backend(link.label, None, link.proxy, link.database))
    if args.replicas:
        say("starting a private MariaDB primary and replica ...")
        pair = stack.enter_context(ScratchReplicatedMariadb())
        counted = {"primary": pair.primary, "replica": pair.replica}
        for count in args.replicas:
            chosen.append(
                Backend(
                    f"mariadb {count} replica{'s' if count != 1 else ''}",
                    None,
                    fresh_database=pair.primary.create_database,
                    replica_database=pair.replica.database_url if count else None,
                    counted=counted,
                )
            )
    return chosen


def boot_pairs(args: argparse.Namespace, stack: contextlib.ExitStack) -> list[Pair]:
    modes = [mode.strip() for mode in args.operations.split(",") if mode.strip()]
    if modes == [SINGLE]:
        modes = [CEILING, *(mode for mode in SINGLE_OPERATION_MODES if mode != CEILING)]
    unknown = set(modes) - set(MODES)
    if unknown:
        sys.exit(f"bench: unknown operation(s) {', '.join(sorted(unknown))}")
    worker_classes = [name.strip() for name in args.worker_classes.split(",") if name.strip()]
    chosen = backends(args, stack)
    pairs: list[Pair] = []
    for class_number, worker_class in enumerate(worker_classes or [""]):
        class_env = {"FEED_WORKER_CLASS": worker_class} if worker_class else {}
        if CEILING in modes:
            hello = stack.enter_context(GunicornServer().serve(class_env, args.workers, HELLO_APP))
            label = worker_class or short_class(hello.worker_class)
            pairs.append(Pair(label, "-", CEILING, hello, World()))
        for backend in chosen:
            for build in builds(args):
                name = f"bench_{class_number}{build.suffix}"
                database_url = backend.database_url
                if backend.fresh_database is not None:
                    database_url = backend.fresh_database(name)
                env = {**class_env, **({"FEED_DATABASE_URL": database_url} if database_url else {})}
                if backend.replica_database is not None:
                    env["FEED_DATABASE_REPLICA_URLS"] = backend.replica_database(name)
                feed = stack.enter_context(
                    GunicornServer().serve(env, args.workers, checkout=build.root)
                )
                label = worker_class or short_class(feed.worker_class)
                backend_name = f"{backend.label}{build.label}"
                feed_modes = [mode for mode in modes if mode != CEILING]
                world = World()
                if set(feed_modes) & MODES_NEEDING_WORLD:
                    say(f"seeding {label}/{backend_name} ...")
                    world = seed_world(feed.host, feed.port, random.Random(args.seed))
                pairs.extend(
                    Pair(
                        label,
                        backend_name,
                        mode,
                        feed,
                        world,
                        backend.proxy,
                        counted=backend.counted,
                    )
                    for mode in feed_modes
                )
    return pairs


@dataclass(frozen=True)
class Build:
    """This checkout (root None) or the --baseline one, and how its lines are labelled."""

    root: Path | None
    label: str
    suffix: str


def builds(args: argparse.Namespace) -> list[Build]:
    this = Build(None, "", "")
    if args.baseline is None:
        return [this]
    revision = subprocess.run(
        ["git", "-C", str(args.baseline), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip() or args.baseline.name  # fmt: skip
    return [this, Build(args.baseline.resolve(), f" @{revision}", "_baseline")]


def measure(pair: Pair, args: argparse.Namespace, rate: float | None, tag: str) -> LoadResult:
    plan = LoadPlan.from_options(
        args, pair.server.host, pair.server.port, mode=pair.mode, rate=rate, world=pair.world
    )
    progress = ProgressLine(f"{tag} {pair.name}")
    result = run_load(plan, progress)
    progress.finish()
    return result


def measure_round(pair: Pair, args: argparse.Namespace, tag: str) -> None:
    """One closed-loop round, with the workers' and the proxy's CPU read from /proc around it."""
    workers_before = pair.server.worker_cpu_seconds()
    proxy_before = pair.proxy.cpu_seconds() if pair.proxy else 0.0
    commands_before = {label: server.commands_received() for label, server in pair.counted.items()}
    result = measure(pair, args, None, tag)
    worker_cpu = pair.server.worker_cpu_seconds() - workers_before
    answered = result.total.requests + result.total.errors
    for label, server in pair.counted.items():
        commands = server.commands_received() - commands_before[label]
        per_request = commands / answered if answered else float("nan")
        pair.statements_per_request.setdefault(label, []).append(per_request)
    pair.worker_us_per_request.append(worker_cpu / answered * 1e6 if answered else float("nan"))
    if pair.proxy:
        proxy_cpu = pair.proxy.cpu_seconds() - proxy_before
        pair.proxy_shares.append(cpu_share(proxy_cpu, result.wall_seconds, result.cores))
    pair.rounds.append(result)


def run_rounds(pairs: Sequence[Pair], args: argparse.Namespace) -> None:
    """Round r starts at pair r (rotation), so no pair always runs first or right after another."""
    for round_number in range(args.rounds):
        for offset in range(len(pairs)):
            pair = pairs[(round_number + offset) % len(pairs)]
            measure_round(pair, args, f"round {round_number + 1}")
    if args.half_rate:
        for pair in pairs:
            if pair.throughput > 0:
                pair.half_rate = measure(pair, args, pair.throughput / 2, "half-rate")


def ceiling_for(pair: Pair, pairs: Sequence[Pair]) -> float | None:
    for candidate in pairs:
        if candidate.mode == CEILING and candidate.worker_class == pair.worker_class:
            return candidate.throughput
    return None


def table(pairs: Sequence[Pair]) -> str:
    headers = (
        "worker", "backend", "operation", "req/s", "x ceiling", "p50 ms", "p99 ms", "errors",
        "spread", "wkr us/req", "gen CPU", "proxy CPU", "@half req/s", "@half p50", "@half p99",
        "@half p99.9",
    )  # fmt: skip
    nan = float("nan")
    rows = []
    for pair in pairs:
        ceiling = ceiling_for(pair, pairs)
        half = pair.half_rate.total if pair.half_rate else None
        proxy_share = pair.proxy_share
        rows.append(
            (
                pair.worker_class,
                pair.backend,
                pair.mode,
                pair.throughput,
                f"{pair.throughput / ceiling:.0%}" if ceiling else "-",
                pair.median("p50_ms"),
                pair.median("p99_ms"),
                pair.errors,
                f"{pair.spread:.0%}",
                pair.worker_us,
                f"{pair.generator_cpu_share:.0%}",
                f"{proxy_share:.0%}" if proxy_share is not None else "-",
                half.per_second if half else nan,
                half.p50_ms if half else nan,
                half.p99_ms if half else nan,
                half.p999_ms if half else nan,
            )
        )
    return format_table(headers, rows)


def statements_table(pairs: Sequence[Pair]) -> str:
    """Statements per request each counted server received (median of the rounds)."""
    rows = [
        (
            pair.backend,
            pair.mode,
            *(
                statistics.median(pair.statements_per_request.get(label, [float("nan")]))
                for label in ("primary", "replica")
            ),
        )
        for pair in pairs
        if pair.counted
    ]
    return format_table(("backend", "operation", "primary stmts/req", "replica stmts/req"), rows)


def as_document(pairs: Sequence[Pair], args: argparse.Namespace, machine: dict) -> dict:
    return {
        "machine": machine,
        "settings": {
            "workers": args.workers,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "db_rtt_ms": args.db_rtt_ms,
            "replicas": args.replicas,
        },
        "pairs": [
            {
                "worker_class": pair.worker_class,
                "gunicorn_worker": pair.server.worker_class,
                "backend": pair.backend,
                "operation": pair.mode,
                "throughput_per_s": pair.throughput,
                "ratio_to_ceiling": (pair.throughput / c)
                if (c := ceiling_for(pair, pairs))
                else None,
                "p50_ms_median": pair.median("p50_ms"),
                "p99_ms_median": pair.median("p99_ms"),
                "errors": pair.errors,
                "worker_cpu_us_per_request_median": pair.worker_us,
                "worker_cpu_us_per_request": pair.worker_us_per_request,
                "generator_cpu_share": pair.generator_cpu_share,
                "proxy_cpu_share": pair.proxy_share,
                "rounds": [result.as_dict() for result in pair.rounds],
                "half_rate": pair.half_rate.as_dict() if pair.half_rate else None,
                "statements_per_request": pair.statements_per_request,
            }
            for pair in pairs
        ],
    }


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.workers, args.rounds, args.concurrency) < 1 or args.duration <= 0:
        sys.exit("bench: workers, rounds, concurrency and duration must be positive")
    if args.baseline and not (args.baseline / ".venv" / "bin" / "python").exists():
        sys.exit(f"bench: {args.baseline} has no .venv: run its scripts/setup first")
    machine = describe_machine()
    with contextlib.ExitStack() as stack:
        say(f"booting servers with {args.workers} workers each ...")
        pairs = boot_pairs(args, stack)
        run_rounds(pairs, args)
    print(f"machine: {machine_line(machine)}")
    print(
        f"{args.workers} workers per server, {args.concurrency} users, {args.rounds} interleaved"
        f" rounds of {args.duration:g}s, closed loop; latency = median of the rounds; @half ="
        " open loop at half of that pair's throughput, latency from each scheduled time;"
        " wkr us/req = the workers' CPU (/proc) per request; gen/proxy CPU = share of the machine"
    )
    print(table(pairs))
    if any(pair.counted for pair in pairs):
        print(
            "statements per request each server received (Questions + pings, median of the"
            " rounds; includes the replica checks of every server booted with a replica, two"
            " statements a second per worker)"
        )
        print(statements_table(pairs))
    if args.json:
        document = as_document(pairs, args, machine)
        args.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ServerError, SeedError) as error:
        sys.exit(f"bench: {error}")

"""Worker-count sweep behind scripts/tune-workers: boot 1..N workers, load each, find the knee."""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import orjson

from loadtest.generator import LoadPlan, LoadResult, run_load
from loadtest.harness.gunicorn import REPO_ROOT, GunicornServer, ServerError, backend_label
from loadtest.machine import describe_machine, machine_line
from loadtest.plotting import NOT_INSTALLED, pyplot, save_figure
from loadtest.remote import RemoteLink, remote_links
from loadtest.report import format_table
from loadtest.scenarios import MODES, MODES_NEEDING_WORLD, World
from loadtest.tuning import DEFAULT_P99_LIMIT_MS, DEFAULT_TOLERANCE, SweepRow, recommend_workers
from loadtest.world import SeedError, seed_world

BAR_WIDTH = 30


class SweepProgress:
    """A progress bar over the whole sweep, redrawn on a terminal, one line per step in a log."""

    def __init__(self, counts: Sequence[int], duration: float) -> None:
        self._counts = list(counts)
        self._duration = duration
        self._step = 0
        self._tty = sys.stderr.isatty()

    def begin(self, step: int) -> None:
        self._step = step
        self.__call__(0.0, 0, 0)

    def __call__(self, elapsed: float, completed: int, failed: int) -> None:
        done = (self._step + elapsed / self._duration) / len(self._counts)
        filled = round(done * BAR_WIDTH)
        rate = completed / elapsed if elapsed > 0 else 0.0
        line = (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done:4.0%}"
            f"  workers={self._counts[self._step]} ({self._step + 1}/{len(self._counts)})"
            f"  {elapsed:5.1f}/{self._duration:g}s  {rate:,.0f} req/s  {failed} errors"
        )
        if self._tty:
            sys.stderr.write(f"\r{line}")
        elif elapsed == 0.0:
            sys.stderr.write(f"{line}\n")
        sys.stderr.flush()

    def end_step(self, row: SweepRow) -> None:
        """Keeps each count's outcome on screen (and in logs) as the sweep moves on."""
        summary = (
            f"workers={row.workers}: {row.throughput:,.0f} req/s, p50 {row.p50_ms:.1f} ms,"
            f" p99 {row.p99_ms:.1f} ms, {row.errors} errors"
        )
        sys.stderr.write(f"\r{summary:<{BAR_WIDTH + 60}}\n" if self._tty else f"{summary}\n")
        sys.stderr.flush()


def build_parser() -> argparse.ArgumentParser:
    cores = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        prog="scripts/tune-workers",
        description="Boot feedsvc with 1..N workers, load each for a fixed time, recommend"
        " FEED_WORKERS. FEED_* variables in the environment (backend, worker class, ...) pass"
        " through to the service.",
    )
    parser.add_argument(
        "-n", "--max-workers", type=int, default=4 * cores, help="largest worker count (4 x cores)"
    )
    parser.add_argument("--min-workers", type=int, default=1)
    parser.add_argument("--step", type=int, default=1, help="worker-count increment")
    parser.add_argument("-k", "--worker-class", help="sets FEED_WORKER_CLASS for the service")
    parser.add_argument("--database-url", help="sets FEED_DATABASE_URL for the service")
    parser.add_argument(
        "--db-rtt-ms", type=float,
        help="size for a remote database: a private MariaDB behind a proxy adding this RTT",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=float,
        help="open loop at this many req/s for every count (default: closed loop, max throughput)",
    )  # fmt: skip
    parser.add_argument("-m", "--mode", "--mix", choices=sorted(MODES), default="classic")
    parser.add_argument("-d", "--duration", type=float, default=20.0, help="seconds per count")
    parser.add_argument(
        "-c", "--concurrency", type=int, help="simulated users (default: 2 x max workers, >= 8)"
    )
    parser.add_argument("-p", "--processes", type=int, default=0, help="generator processes")
    parser.add_argument("-s", "--search-percent", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--p99-limit-ms", type=float, default=DEFAULT_P99_LIMIT_MS,
        help="a count whose p99 exceeds this is never recommended",
    )  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    parser.add_argument(
        "-o", "--out", type=Path,
        help="directory for tune.csv, tune.json, tune.png (default: loadtest/results/tune-<time>)",
    )  # fmt: skip
    return parser


def service_env(args: argparse.Namespace, database_url: str | None) -> dict[str, str]:
    env = {}
    if args.worker_class:
        env["FEED_WORKER_CLASS"] = args.worker_class
    if database_url:
        env["FEED_DATABASE_URL"] = database_url
    return env


def measure_count(
    workers: int, args: argparse.Namespace, progress: SweepProgress, link: RemoteLink | None
) -> tuple[str, LoadResult]:
    """Each count gets a fresh server (and, on a remote link, a fresh database)."""
    database_url = link.database(f"tune_{workers}") if link else args.database_url
    with GunicornServer().serve(service_env(args, database_url), workers) as server:
        world = World()
        if args.mode in MODES_NEEDING_WORLD:
            world = seed_world(server.host, server.port, random.Random(args.seed))
        plan = LoadPlan.from_options(args, server.host, server.port, world=world)
        result = run_load(plan, progress)
        return server.worker_class, result


def sweep_row(workers: int, result: LoadResult) -> SweepRow:
    total = result.total
    return SweepRow(workers, total.per_second, total.p50_ms, total.p99_ms, total.errors)


def table(rows: Sequence[SweepRow], shares: Sequence[float], chosen: int | None) -> str:
    headers = ("workers", "req/s", "p50 ms", "p99 ms", "errors", "gen CPU", "")
    lines = (
        (r.workers, r.throughput, r.p50_ms, r.p99_ms, r.errors, f"{share:.0%}",
         "<- recommended" if r.workers == chosen else "")
        for r, share in zip(rows, shares, strict=True)
    )  # fmt: skip
    return format_table(headers, lines)


def write_csv(path: Path, rows: Sequence[SweepRow], shares: Sequence[float]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["workers", "throughput_per_s", "p50_ms", "p99_ms", "errors", "gen_cpu"])
        for row, share in zip(rows, shares, strict=True):
            writer.writerow(
                [row.workers, f"{row.throughput:.1f}", f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}",
                 row.errors, f"{share:.3f}"]
            )  # fmt: skip


def draw_plot(path: Path, rows: Sequence[SweepRow], chosen: int | None, title: str) -> str:
    """Throughput and p99 against workers; matplotlib is the optional `plot` extra."""
    plt = pyplot()
    if plt is None:
        return NOT_INSTALLED
    workers = [row.workers for row in rows]
    figure, throughput_axis = plt.subplots(figsize=(8, 4.5))
    throughput_axis.plot(workers, [row.throughput for row in rows], "o-", color="tab:blue")
    throughput_axis.set_xlabel("gunicorn workers")
    throughput_axis.set_ylabel("throughput (req/s)", color="tab:blue")
    throughput_axis.set_ylim(bottom=0)
    latency_axis = throughput_axis.twinx()
    latency_axis.plot(workers, [row.p99_ms for row in rows], "s--", color="tab:red")
    latency_axis.set_ylabel("p99 latency (ms)", color="tab:red")
    latency_axis.set_ylim(bottom=0)
    if chosen is not None:
        throughput_axis.axvline(chosen, color="gray", linestyle=":", label=f"FEED_WORKERS={chosen}")
        throughput_axis.legend(loc="lower right")
    throughput_axis.set_xticks(workers)
    return save_figure(plt, figure, path, title)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.min_workers < 1 or args.max_workers < args.min_workers or args.step < 1:
        sys.exit("tune-workers: need 1 <= --min-workers <= --max-workers and --step >= 1")
    if (args.rate is not None and args.rate <= 0) or (args.db_rtt_ms or 0) < 0:
        sys.exit("tune-workers: --rate must be positive and --db-rtt-ms not negative")
    if args.db_rtt_ms is not None and args.database_url:
        sys.exit("tune-workers: --db-rtt-ms brings its own database; drop --database-url")
    with contextlib.ExitStack() as stack:
        link = None
        if args.db_rtt_ms is not None:
            link = stack.enter_context(remote_links([args.db_rtt_ms]))[0]
            print(f"{link.label}: measured ping {link.measured_rtt_ms():.3f} ms", file=sys.stderr)
        return sweep(args, link)


def sweep(args: argparse.Namespace, link: RemoteLink | None) -> int:
    args.concurrency = args.concurrency or max(8, 2 * args.max_workers)
    counts = list(range(args.min_workers, args.max_workers + 1, args.step))
    out = args.out or REPO_ROOT / "loadtest" / "results" / time.strftime("tune-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    progress = SweepProgress(counts, args.duration)
    rows: list[SweepRow] = []
    results: list[LoadResult] = []
    gunicorn_worker = "?"
    for step, workers in enumerate(counts):
        progress.begin(step)
        gunicorn_worker, result = measure_count(workers, args, progress, link)
        rows.append(sweep_row(workers, result))
        results.append(result)
        progress.end_step(rows[-1])
    recommendation = recommend_workers(rows, args.p99_limit_ms, args.tolerance)
    shares = [result.generator_cpu_share for result in results]
    configured_url = args.database_url or os.environ.get("FEED_DATABASE_URL")
    backend = link.label if link else backend_label(configured_url)
    load = f"open loop at {args.rate:g} req/s" if args.rate else "closed loop"
    setting = (
        f"{args.mode} load ({load}), {args.concurrency} users, {args.duration:g}s per count,"
        f" gunicorn worker {gunicorn_worker}, backend {backend}"
    )
    print(f"machine: {machine_line(machine)}")
    print(setting)
    print(table(rows, shares, recommendation.workers))
    write_csv(out / "tune.csv", rows, shares)
    document = {
        "machine": machine,
        "mode": args.mode,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "gunicorn_worker": gunicorn_worker,
        "backend": backend,
        "rate_per_s": args.rate,
        "db_rtt_ms": args.db_rtt_ms,
        "p99_limit_ms": args.p99_limit_ms,
        "tolerance": args.tolerance,
        "rows": [
            {**asdict(row), "generator_cpu_share": share}
            for row, share in zip(rows, shares, strict=True)
        ],
        "recommended_workers": recommendation.workers,
        "reason": recommendation.reason,
        "runs": [result.as_dict() for result in results],
    }
    (out / "tune.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    title = f"{setting}\n{machine_line(machine)}"
    print(draw_plot(out / "tune.png", rows, recommendation.workers, title))
    print(f"table: {out / 'tune.csv'} and {out / 'tune.json'}")
    if recommendation.workers is None:
        print(f"no recommendation: {recommendation.reason}")
        return 1
    print(f"recommended: FEED_WORKERS={recommendation.workers}  ({recommendation.reason})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ServerError, SeedError) as error:
        sys.exit(f"tune-workers: {error}")

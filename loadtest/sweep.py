"""Latency against offered load: the maximum throughput first, then open loop at fractions of it.

python -m loadtest.sweep --mode get-participant [--fractions 10,25,50,75,90] [--db-rtt-ms 1]
One server is booted; a closed-loop run measures its maximum; each fraction then runs open loop
at that share of the maximum, latency from each scheduled time. Writes sweep.json, the merged
histogram of each step (.hgrm) and sweep.png (p50/p99/p99.9 against offered load).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from feedsvc.core.config import default_workers
from loadtest.generator import LoadPlan, LoadResult, ProgressLine, run_load
from loadtest.harness.gunicorn import (
    HELLO_APP,
    REPO_ROOT,
    GunicornServer,
    ServerError,
    backend_label,
)
from loadtest.machine import describe_machine, machine_line
from loadtest.plotting import NOT_INSTALLED, pyplot, save_figure
from loadtest.remote import remote_links
from loadtest.report import format_table, write_hgrm
from loadtest.scenarios import MODES, MODES_NEEDING_WORLD, World
from loadtest.world import SeedError, seed_world

DEFAULT_FRACTIONS = "10,25,50,75,90"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.sweep", description=__doc__)
    parser.add_argument("-m", "--mode", "--mix", choices=sorted(MODES), default="get-participant")
    parser.add_argument("-w", "--workers", type=int, default=default_workers(is_sqlite=True))
    parser.add_argument("-k", "--worker-class", help="sets FEED_WORKER_CLASS for the service")
    parser.add_argument("--database-url", help="sets FEED_DATABASE_URL for the service")
    parser.add_argument(
        "--db-rtt-ms", type=float, help="a private MariaDB behind a proxy adding this RTT"
    )
    parser.add_argument("-f", "--fractions", default=DEFAULT_FRACTIONS, help="percent of max")
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="simulated users")
    parser.add_argument("-p", "--processes", type=int, default=0, help="generator processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "-o", "--out", type=Path,
        help="directory for sweep.json, *.hgrm, sweep.png (default: loadtest/results/sweep-<time>)",
    )  # fmt: skip
    return parser


def step_row(label: str, offered: float | None, result: LoadResult) -> tuple:
    total = result.total
    return (
        label, offered if offered else float("nan"), total.per_second, total.p50_ms,
        total.p99_ms, total.p999_ms, total.max_ms, result.late, total.errors,
        f"{result.generator_cpu_share:.0%}",
    )  # fmt: skip


def draw_plot(
    path: Path, offered: Sequence[float], results: Sequence[LoadResult], title: str
) -> str:
    """p50, p99 and p99.9 against offered load, log latency axis; matplotlib is the `plot` extra."""
    plt = pyplot()
    if plt is None:
        return NOT_INSTALLED
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for label, attribute, style in (
        ("p50", "p50_ms", "o-"), ("p99", "p99_ms", "s-"), ("p99.9", "p999_ms", "^-"),
    ):  # fmt: skip
        axis.plot(offered, [getattr(r.total, attribute) for r in results], style, label=label)
    axis.set_xlabel("offered load (req/s, open loop)")
    axis.set_ylabel("latency from scheduled time (ms)")
    axis.set_yscale("log")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    return save_figure(plt, figure, path, title)


def run_step(server: GunicornServer, world: World, args: argparse.Namespace, rate: float | None,
             label: str) -> LoadResult:  # fmt: skip
    plan = LoadPlan.from_options(args, server.host, server.port, rate=rate, world=world)
    progress = ProgressLine(label)
    result = run_load(plan, progress)
    progress.finish()
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fractions = [float(part) for part in args.fractions.split(",") if part.strip()]
    if not fractions or any(not 0 < f <= 100 for f in fractions) or args.duration <= 0:
        sys.exit("sweep: fractions must be within (0, 100] and the duration positive")
    out = args.out or REPO_ROOT / "loadtest" / "results" / time.strftime("sweep-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    env = {"FEED_WORKER_CLASS": args.worker_class} if args.worker_class else {}
    with contextlib.ExitStack() as stack:
        backend = backend_label(args.database_url)
        database_url = args.database_url
        if args.db_rtt_ms is not None:
            link = stack.enter_context(remote_links([args.db_rtt_ms]))[0]
            database_url, backend = link.database("sweep"), link.label
        if database_url:
            env["FEED_DATABASE_URL"] = database_url
        app = HELLO_APP if args.mode == "hello" else None
        server = stack.enter_context(GunicornServer().serve(env, args.workers, app))
        world = World()
        if args.mode in MODES_NEEDING_WORLD:
            world = seed_world(server.host, server.port, random.Random(args.seed))
        maximum = run_step(server, world, args, None, "maximum")
        peak = maximum.total.per_second
        if peak <= 0:
            sys.exit("sweep: the closed-loop run answered nothing")
        offered = [peak * fraction / 100 for fraction in fractions]
        results = [
            run_step(server, world, args, rate, f"{fraction:g}%")
            for fraction, rate in zip(fractions, offered, strict=True)
        ]
        worker = server.worker_class
    setting = (
        f"{args.mode}, {args.workers} workers ({worker}), backend {backend},"
        f" {args.concurrency} users, {args.duration:g}s per step"
    )
    headers = ("step", "offered/s", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "late",
               "errors", "gen CPU")  # fmt: skip
    rows = [step_row("max (closed)", None, maximum)]
    rows += [
        step_row(f"{fraction:g}%", rate, result)
        for fraction, rate, result in zip(fractions, offered, results, strict=True)
    ]
    print(f"machine: {machine_line(machine)}")
    print(setting)
    print(format_table(headers, rows))
    for fraction, result in zip(fractions, results, strict=True):
        write_hgrm(out / f"sweep-{fraction:g}.hgrm", result.total_histogram())
    document = {
        "machine": machine,
        "setting": setting,
        "maximum": maximum.as_dict(),
        "steps": [
            {"percent_of_max": fraction, "offered_per_s": rate, **result.as_dict()}
            for fraction, rate, result in zip(fractions, offered, results, strict=True)
        ],
    }
    (out / "sweep.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print(draw_plot(out / "sweep.png", offered, results, f"{setting}\n{machine_line(machine)}"))
    print(f"table: {out / 'sweep.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ServerError, SeedError) as error:
        sys.exit(f"sweep: {error}")

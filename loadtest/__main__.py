"""Command line: python -m loadtest HOST:PORT [--mode classic] [-c 16] [-d 30] [--json out.json]."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import orjson

from loadtest.generator import LoadPlan, LoadResult, ProgressLine, run_load
from loadtest.report import summary_table, write_hgrm
from loadtest.scenarios import MODES, MODES_NEEDING_WORLD
from loadtest.world import SeedError, seed_world


def parse_target(text: str) -> tuple[str, int]:
    host, _, port = text.removeprefix("http://").rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"target must be HOST:PORT, got {text!r}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest", description="Load-test a running feedsvc."
    )
    parser.add_argument("target", type=parse_target, help="HOST:PORT of the service")
    parser.add_argument("-m", "--mode", "--mix", choices=sorted(MODES), default="classic")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="simulated users")
    parser.add_argument("-d", "--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument(
        "-p", "--processes", type=int, default=0, help="generator processes (default: one per core)"
    )
    parser.add_argument(
        "-s",
        "--search-percent",
        type=float,
        default=10.0,
        help="classic mode: share of users that search instead of posting",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (reproducible runs)")
    parser.add_argument(
        "--rate", type=float,
        help="open loop: requests/s at a constant arrival rate, latency from each scheduled time",
    )  # fmt: skip
    parser.add_argument(
        "--max-connections", type=int, default=0,
        help="open loop: connections it may open when none is idle (default: 4 x concurrency)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    parser.add_argument("--hgrm", type=Path, help="also write the merged latency histogram here")
    parser.add_argument("-q", "--quiet", action="store_true", help="no live progress line")
    return parser


def prepare_world(plan: LoadPlan) -> LoadPlan:
    """Seeds participants for the read-side modes; classic and hello need none."""
    if plan.mode not in MODES_NEEDING_WORLD:
        return plan
    world = seed_world(plan.host, plan.port, random.Random(plan.seed))
    return LoadPlan(**{**plan.__dict__, "world": world})


def describe(result: LoadResult) -> str:
    plan = result.plan
    header = (
        f"{plan.mode} on {plan.host}:{plan.port}: {plan.concurrency} users in"
        f" {plan.process_count} processes for {result.wall_seconds:.1f}s"
        + (
            f", open loop at {plan.rate:g} req/s (latency from each scheduled time)"
            if plan.rate
            else ", closed loop"
        )
    )
    footer = (
        f"generator CPU: {result.cpu_seconds:.2f}s = {result.generator_cpu_share:.1%} of"
        f" {result.cores} cores; {result.connections} connections, {result.late} late,"
        f" {result.resends} resent after an idle close"
    )
    kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(result.error_kinds.items()))
    lines = [header, summary_table(result.summaries), footer]
    if kinds:
        lines.append(f"errors by kind: {kinds}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.concurrency < 1 or args.duration <= 0 or (args.rate is not None and args.rate <= 0):
        sys.exit("loadtest: concurrency, duration and rate must be positive")
    host, port = args.target
    plan = LoadPlan.from_options(args, host, port)
    try:
        plan = prepare_world(plan)
    except (OSError, SeedError) as error:
        sys.exit(f"loadtest: cannot seed {host}:{port}: {error}")
    progress = None if args.quiet else ProgressLine(plan.mode)
    result = run_load(plan, progress)
    if progress is not None:
        progress.finish()
    print(describe(result))
    if args.json:
        args.json.write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2))
    if args.hgrm:
        write_hgrm(args.hgrm, result.total_histogram())
    return 1 if result.total.requests == 0 else 0


if __name__ == "__main__":
    sys.exit(main())

"""Cross-checks the generator's maximum throughput against wrk at the same connection count.

python -m loadtest.crosscheck [-w 2] [-c 16] [-d 5] [-r 3]
On `hello` and `GET /participant/{id}`, rounds alternate the generator and wrk (Debian's
package, installed by scripts/setup) against the same servers; both throughputs, their ratio
and each tool's CPU share are reported. A generator whose CPU share nears its cores is the
bottleneck, and the table says so.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from feedsvc.core.config import default_workers
from loadtest.generator import LoadPlan, run_load
from loadtest.harness.gunicorn import HELLO_APP, GunicornServer, ServerError
from loadtest.machine import describe_machine, machine_line
from loadtest.report import cpu_share, format_table
from loadtest.scenarios import World
from loadtest.world import SeedError, seed_world

AGREEMENT = 0.10
_REQUESTS_PER_SECOND = re.compile(r"Requests/sec:\s+([\d.]+)")


@dataclass
class Check:
    mode: str
    server: GunicornServer
    world: World
    path_script: str
    generator: list[tuple[float, float]] = field(default_factory=list)  # req/s, CPU share
    wrk: list[tuple[float, float]] = field(default_factory=list)


def wrk_script(mode: str, world: World) -> str:
    """wrk's Lua request hook: the same paths the generator's mode asks for."""
    if mode == "hello":
        return 'request = function() return wrk.format("GET", "/") end\n'
    ids = ", ".join(str(participant) for participant in world.participant_ids)
    return (
        f"local ids = {{{ids}}}\n"
        "request = function()\n"
        '  return wrk.format("GET", "/participant/" .. ids[math.random(#ids)])\n'
        "end\n"
    )


def run_wrk(check: Check, args: argparse.Namespace, script: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(
        ["wrk", f"-t{args.threads}", f"-c{args.concurrency}", f"-d{args.duration:g}s",
         "-s", str(script), f"http://{check.server.host}:{check.server.port}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = _REQUESTS_PER_SECOND.search(completed.stdout)
    if found is None or "Non-2xx" in completed.stdout or "Socket errors" in completed.stdout:
        raise RuntimeError(f"wrk reported errors or no rate:\n{completed.stdout}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(found.group(1)), cpu_share(cpu, args.duration, os.cpu_count() or 1)


def run_generator(check: Check, args: argparse.Namespace) -> tuple[float, float]:
    plan = LoadPlan(
        check.server.host, check.server.port, mode=check.mode, concurrency=args.concurrency,
        duration=args.duration, processes=args.threads, world=check.world,
    )  # fmt: skip
    result = run_load(plan)
    if result.total.errors:
        raise RuntimeError(f"generator errors: {result.error_kinds}")
    return result.total.per_second, result.generator_cpu_share


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.crosscheck", description=__doc__)
    parser.add_argument("-w", "--workers", type=int, default=default_workers(is_sqlite=True))
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="connections, both")
    parser.add_argument("-t", "--threads", type=int, default=os.cpu_count() or 1,
                        help="wrk threads = generator processes")  # fmt: skip
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("-r", "--rounds", type=int, default=3, help="alternating rounds")
    return parser


def verdict(generator: float, wrk: float, generator_us: float, wrk_us: float) -> str:
    """Within 10% they agree; below, a generator costlier per request takes the server's CPU."""
    ratio = generator / wrk
    if abs(ratio - 1) <= AGREEMENT:
        return "agree"
    if ratio < 1 and generator_us > wrk_us:
        return "generator is the bottleneck (its CPU per request is the server's loss)"
    return "disagree"


def us_per_request(share: float, rate: float) -> float:
    """CPU microseconds per request from a share of the machine at a request rate."""
    return share * (os.cpu_count() or 1) / rate * 1e6 if rate else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("crosscheck: wrk is not installed (scripts/setup installs it)")
    machine = describe_machine()
    with contextlib.ExitStack() as stack:
        hello = stack.enter_context(GunicornServer().serve({}, args.workers, HELLO_APP))
        feed = stack.enter_context(GunicornServer().serve({}, args.workers))
        world = seed_world(feed.host, feed.port, random.Random(1))
        checks = [
            Check("hello", hello, World(), wrk_script("hello", World())),
            Check("get-participant", feed, world, wrk_script("get-participant", world)),
        ]
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for number in range(args.rounds):
            for check in checks:
                script = directory / f"{check.mode}.lua"
                script.write_text(check.path_script)
                # Alternate which tool goes first, so neither always meets a warmer server.
                tools = [("generator", check.generator), ("wrk", check.wrk)]
                for name, samples in tools if number % 2 == 0 else reversed(tools):
                    print(f"round {number + 1} {check.mode} {name} ...", file=sys.stderr)
                    measured = (
                        run_generator(check, args) if name == "generator"
                        else run_wrk(check, args, script)
                    )  # fmt: skip
                    samples.append(measured)
    rows = []
    for check in checks:
        generator = statistics.median(rate for rate, _ in check.generator)
        wrk = statistics.median(rate for rate, _ in check.wrk)
        generator_share = statistics.fmean(share for _, share in check.generator)
        wrk_share = statistics.fmean(share for _, share in check.wrk)
        generator_us = us_per_request(generator_share, generator)
        wrk_us = us_per_request(wrk_share, wrk)
        rows.append((
            check.mode, generator, wrk, f"{generator / wrk:.2f}", f"{generator_share:.0%}",
            f"{wrk_share:.0%}", generator_us, wrk_us, verdict(generator, wrk, generator_us, wrk_us),
        ))  # fmt: skip
    print(f"machine: {machine_line(machine)}")
    print(
        f"{args.workers} workers, {args.concurrency} connections, {args.threads} generator"
        f" processes = wrk threads, {args.rounds} alternating rounds of {args.duration:g}s"
        " (medians)"
    )
    headers = ("operation", "generator req/s", "wrk req/s", "ratio", "gen CPU", "wrk CPU",
               "gen us/req", "wrk us/req", "")  # fmt: skip
    print(format_table(headers, rows))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ServerError, SeedError, RuntimeError, subprocess.CalledProcessError) as error:
        sys.exit(f"crosscheck: {error}")

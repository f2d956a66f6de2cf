"""What nginx in front costs: each operation straight to gunicorn and through nginx, in one run.

python -m loadtest.bench_proxy [-o get-participant,read-heavy] [-r 3] [-d 5]
One gunicorn (config/gunicorn.conf.py, SQLite) with nginx (config/nginx/feedsvc.conf, rendered as
scripts/install does, upstream over loopback TCP) in front of it; rounds alternate the two paths.
Besides throughput and latency it counts CPU per request from /proc (utime + stime of the
gunicorn and nginx process trees), which a busy machine hides less than throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from feedsvc.core.config import default_workers
from loadtest.generator import LoadPlan, LoadResult, ProgressLine, run_load
from loadtest.harness.gunicorn import GunicornServer, ServerError
from loadtest.harness.nginx import NginxServer
from loadtest.machine import describe_machine, machine_line
from loadtest.report import format_table
from loadtest.scenarios import MODES, MODES_NEEDING_WORLD, World
from loadtest.world import seed_world

DEFAULT_OPERATIONS = ("get-participant", "read-heavy")
PATHS = ("direct", "nginx")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of a process and its children (a master and its workers), from /proc."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            # After the command name: state ppid ... utime (14th field) stime (15th).
            if int(entry.name) == root or int(fields[1]) == root:
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


@dataclass
class Round:
    result: LoadResult
    app_cpu_s: float
    proxy_cpu_s: float

    def micros_per_request(self, seconds: float) -> float:
        requests = self.result.total.requests
        return seconds * 1e6 / requests if requests else float("nan")


@dataclass
class Line:
    """One operation over one path, every round's result."""

    mode: str
    path: str
    rounds: list[Round] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return statistics.fmean(r.result.total.per_second for r in self.rounds)

    def median(self, attribute: str) -> float:
        return statistics.median(getattr(r.result.total, attribute) for r in self.rounds)

    @property
    def errors(self) -> int:
        return sum(r.result.total.errors for r in self.rounds)

    @property
    def app_cpu_us(self) -> float:
        return statistics.median(r.micros_per_request(r.app_cpu_s) for r in self.rounds)

    @property
    def proxy_cpu_us(self) -> float:
        return statistics.median(r.micros_per_request(r.proxy_cpu_s) for r in self.rounds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_proxy", description=__doc__)
    parser.add_argument("-o", "--operations", default=",".join(DEFAULT_OPERATIONS))
    parser.add_argument("-w", "--workers", type=int, default=default_workers(is_sqlite=True))
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("-p", "--processes", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write every figure as JSON here")
    return parser


def measure(
    line: Line,
    port: int,
    world: World,
    app: GunicornServer,
    proxy: NginxServer,
    args: argparse.Namespace,
) -> Round:
    plan = LoadPlan.from_options(args, "127.0.0.1", port, mode=line.mode, world=world)
    app_before, proxy_before = tree_cpu_seconds(app.pid), tree_cpu_seconds(proxy.pid)
    progress = ProgressLine(f"round {len(line.rounds) + 1} {line.path}/{line.mode}")
    result = run_load(plan, progress)
    progress.finish()
    return Round(
        result,
        tree_cpu_seconds(app.pid) - app_before,
        tree_cpu_seconds(proxy.pid) - proxy_before,
    )


def table(lines: list[Line]) -> str:
    headers = (
        "operation", "path", "req/s", "x direct", "p50 ms", "p99 ms", "errors",
        "app CPU us/req", "nginx CPU us/req", "CPU x direct",
    )  # fmt: skip
    direct = {line.mode: line for line in lines if line.path == "direct"}
    rows = []
    for line in lines:
        base = direct[line.mode]
        total_cpu = line.app_cpu_us + line.proxy_cpu_us
        rows.append(
            (
                line.mode,
                line.path,
                line.throughput,
                f"{line.throughput / base.throughput:.0%}",
                line.median("p50_ms"),
                line.median("p99_ms"),
                line.errors,
                line.app_cpu_us,
                line.proxy_cpu_us,
                f"{total_cpu / (base.app_cpu_us + base.proxy_cpu_us):.2f}",
            )
        )
    return format_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    modes = [mode.strip() for mode in args.operations.split(",") if mode.strip()]
    if unknown := set(modes) - set(MODES):
        sys.exit(f"bench_proxy: unknown operation(s) {', '.join(sorted(unknown))}")
    lines = [Line(mode, path) for mode in modes for path in PATHS]
    try:
        with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as directory:
            app = stack.enter_context(GunicornServer().serve({}, args.workers))
            proxy = NginxServer(Path(directory), f"{app.host}:{app.port}", 1024)
            proxy.start({})
            stack.callback(proxy.stop)
            world = World()
            if set(modes) & MODES_NEEDING_WORLD:
                world = seed_world(app.host, app.port, random.Random(args.seed))
            ports = {"direct": app.port, "nginx": proxy.port}
            for round_number in range(args.rounds):
                for offset in range(len(lines)):
                    line = lines[(round_number + offset) % len(lines)]
                    line.rounds.append(measure(line, ports[line.path], world, app, proxy, args))
    except ServerError as error:
        sys.exit(f"bench_proxy: {error}")
    machine = describe_machine()
    print(machine_line(machine))
    print(
        f"{args.workers} {app.worker_class} workers, SQLite, {args.concurrency} users, "
        f"{args.rounds} rounds of {args.duration:g} s per line, alternated"
    )
    print(table(lines))
    if args.json:
        document = {
            "machine": machine,
            "lines": [
                {
                    "operation": line.mode,
                    "path": line.path,
                    "throughput_per_s": line.throughput,
                    "p50_ms_median": line.median("p50_ms"),
                    "p99_ms_median": line.median("p99_ms"),
                    "errors": line.errors,
                    "app_cpu_us_per_request": line.app_cpu_us,
                    "nginx_cpu_us_per_request": line.proxy_cpu_us,
                    "rounds": [r.result.as_dict() for r in line.rounds],
                }
                for line in lines
            ],
        }
        args.json.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Kafka's cost on the request path, side by side in one run, and the outbox drain after an outage.

python -m loadtest.kafka_compare [-d 10] [-c 16] [-r 2] [-w WORKERS] [-m classic]

Boots four identical servers on the embedded default: Kafka off; Kafka on with post events only
(FEED_KAFKA_PERF_RECORDS=false) and a Tansu broker up; Kafka on with both streams and the broker
up; and the same with its broker down (nothing listens at its bootstrap address). Rounds of
`python -m loadtest` interleave them so a noisy neighbour hits each alike. Besides the throughput,
each round reads the CPU time (utime + stime in /proc/PID/stat) the workers and the perf publisher
used, divided by the API requests the server counted in /metrics: what the perf records add per
request is the difference to the events-only server, what Kafka adds in all is the difference to
Kafka off. The workers' background threads (the outbox relays and kafka-python's network thread;
/proc/PID/task) are shown apart from the threads serving requests, and so is the broker's CPU (here
it shares the cores with the service). Then the broker of the last
comes up at that address, and the events its outbox collected meanwhile are timed until the outbox
is empty: the drain rate after an outage. Last, a perf publisher alone, fed a channel of its own at
a steady rate with no server around it: its CPU per record with the broker up and down.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import falcon.testing
import orjson
from prometheus_client.parser import text_string_to_metric_families

from feedsvc.adapters.kafka.events import SINK_NAME
from feedsvc.adapters.kafka.perf_channel import RECORD, PerfChannel
from feedsvc.adapters.kafka.perf_sink import ChannelSink
from feedsvc.adapters.kafka.perf_supervisor import PUBLISHER_MODULE
from feedsvc.api.request_timing import RequestTiming
from feedsvc.compose.schema import init_db
from feedsvc.compose.service import build_service
from feedsvc.core.config import Config
from loadtest.bench_outbox import time_drain
from loadtest.harness.gunicorn import GunicornServer
from loadtest.harness.kafka import TansuBroker, tansu_binary
from loadtest.harness.ports import free_port

SETTINGS = ("off", "events", "up", "down")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
REQUEST_COUNT = "feed_http_request_duration_seconds"
PERF_PUBLISHED = "feed_perf_records_published"
PERF_DROPPED = "feed_perf_records_dropped"
PERF_QUEUED = "feed_perf_records_queued"
# Routes whose requests make perf records (not /ready, /metrics, /openapi.json).
API_ROUTES = ("/participant", "/outbound")


@dataclass
class Measured:
    """One server under test and the totals of each of its load rounds."""

    setting: str
    server: GunicornServer
    data_dir: Path
    # The broker this server publishes to (shared by two servers, whose rounds never overlap).
    broker: TansuBroker | None = None
    rounds: list[dict] = field(default_factory=list)
    # Per round: CPU microseconds per request served, of the workers and of the perf publisher.
    worker_cpu: list[float] = field(default_factory=list)
    # Of worker_cpu: what the workers' threads other than the one serving requests used.
    background_cpu: list[float] = field(default_factory=list)
    publisher_cpu: list[float] = field(default_factory=list)
    # The broker's CPU per request: on this machine it shares the cores with the service.
    broker_cpu: list[float] = field(default_factory=list)

    def mean(self, name: str) -> float:
        return statistics.fmean(float(total[name]) for total in self.rounds)

    def measure_round(self, args: argparse.Namespace, report: Path) -> None:
        """One load round, with the CPU the server's processes spent on it per API request."""
        workers, publishers = self.server.worker_pids(), self.server.publisher_pids()
        brokers = self.broker.pids if self.broker else []
        served_before = served(self.server)
        worker_before, publisher_before = cpu_seconds(workers), cpu_seconds(publishers)
        broker_before = cpu_seconds(brokers)
        background_before = background_cpu_seconds(workers)
        self.rounds.append(load_round(self.server, args, report))
        requests = served(self.server) - served_before
        self.worker_cpu.append((cpu_seconds(workers) - worker_before) / requests * 1e6)
        background = background_cpu_seconds(workers) - background_before
        self.background_cpu.append(background / requests * 1e6)
        self.publisher_cpu.append((cpu_seconds(publishers) - publisher_before) / requests * 1e6)
        self.broker_cpu.append((cpu_seconds(brokers) - broker_before) / requests * 1e6)

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


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (fields 14 and 15 of their stat)."""
    return sum(_stat_cpu_seconds(Path(f"/proc/{pid}/stat")) for pid in pids)


def background_cpu_seconds(pids: list[int]) -> float:
    """CPU time of the processes' threads other than their main thread (which serves requests):
    threads that ended meanwhile are not counted, nor are those started later before they ran."""
    return sum(
        _stat_cpu_seconds(task / "stat")
        for pid in pids
        for task in Path(f"/proc/{pid}/task").iterdir()
        if task.name != str(pid)
    )


def _stat_cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_ns(pids: list[int], threads: str = "all") -> int:
    """CPU time the processes have run so far, in nanoseconds (field 1 of schedstat): of all
    their live threads (exited ones are not counted), or of their main threads alone ("main":
    /proc/PID/schedstat is the main thread's), which serve the requests."""
    if threads == "main":
        return sum(int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) for pid in pids)
    return sum(
        int((task / "schedstat").read_text().split()[0])
        for pid in pids
        for task in Path(f"/proc/{pid}/task").iterdir()
    )


def paired_worker_cost(
    baseline: Measured, measured: Measured, pairs: int = 10, calls: int = 3000
) -> str:
    """Worker CPU per request through real gunicorn workers, paired so that load from elsewhere
    hits both alike: the same serial stream of GET /participant/1 on one keep-alive connection
    to each server in turn, the CPU time of its workers around each batch: of the threads that
    serve requests, and of all their threads (the relays' and kafka-python's too: noisier)."""
    spent: dict[tuple[str, str], list[float]] = {
        (m.setting, threads): [] for m in (baseline, measured) for threads in ("main", "all")
    }
    for _ in range(pairs):
        for m in (baseline, measured):
            connection = http.client.HTTPConnection("127.0.0.1", m.server.port, timeout=30)
            workers = m.server.worker_pids()
            before = {threads: cpu_ns(workers, threads) for threads in ("main", "all")}
            for _ in range(calls):
                connection.request("GET", "/participant/1")
                connection.getresponse().read()
            for threads, ns in before.items():
                spent[m.setting, threads].append((cpu_ns(workers, threads) - ns) / calls / 1000)
            connection.close()
    lines = []
    for threads, label in (("main", "serving threads"), ("all", "all threads")):
        base, other = spent[baseline.setting, threads], spent[measured.setting, threads]
        added = statistics.median(b - a for a, b in zip(base, other, strict=True))
        lines.append(
            f"paired, GET /participant/1 through gunicorn ({pairs} x {calls} requests each):"
            f" worker CPU per request ({label}), median of batches: kafka {baseline.setting}"
            f" {statistics.median(base):.1f} us, kafka {measured.setting}"
            f" {statistics.median(other):.1f} us; median paired difference {added:+.1f} us"
        )
    return "\n".join(lines)


def metric_totals(server: GunicornServer) -> dict[str, float]:
    """From the server's /metrics: sample totals by name (labels summed), and its API requests."""
    totals = {"api_requests": 0.0}
    text = server.request("GET", "/metrics").body.decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            if sample.name == f"{REQUEST_COUNT}_count" and sample.labels["route"].startswith(
                API_ROUTES
            ):
                totals["api_requests"] += sample.value
    return totals


def served(server: GunicornServer) -> float:
    """API requests (each one a perf record) the server has answered so far, by its own count."""
    return metric_totals(server)["api_requests"]


def load_round(server: GunicornServer, args: argparse.Namespace, report: Path) -> dict:
    """One `python -m loadtest` run; its total line as a dict."""
    command = [
        sys.executable, "-m", "loadtest", f"127.0.0.1:{server.port}", "-m", args.mode,
        "-c", str(args.concurrency), "-d", str(args.duration), "-q", "--json", str(report),
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return orjson.loads(report.read_bytes())["operations"][-1]


def in_process_cost(data_dir: Path, rounds: int = 40, calls: int = 400) -> str:
    """The worker's added CPU per API request without a server's noise: the real app, in this
    process, with and without the perf middleware, interleaved, GET /participant/1 called
    through WSGI; thread CPU time around the calls only (the channel is emptied in between)."""
    config = Config.from_env({"FEED_DATA_DIR": str(data_dir)})
    init_db(config)
    channel = PerfChannel()
    plain = build_service(config, start_relay=False)
    timing = [RequestTiming(ChannelSink(channel.sender))]
    timed = build_service(
        config, engine=plain.engine, search=plain.search, middleware=timing, start_relay=False
    )
    apps = {"off": plain.app, "on": timed.app}
    environ = falcon.testing.create_environ("/participant/1")
    falcon.testing.TestClient(apps["off"]).simulate_post("/participant", json={"name": "Ada"})
    spent = {name: 0 for name in apps}
    channel.receiver.setblocking(False)
    for _ in range(rounds):
        for name, app in apps.items():
            started = time.thread_time_ns()
            for _ in range(calls):
                b"".join(app(dict(environ), lambda status, headers, exc_info=None: None))
            spent[name] += time.thread_time_ns() - started
            with contextlib.suppress(BlockingIOError):
                while channel.receiver.recv(64):
                    pass
    plain.close()
    off, on = (ns / 1000 / (rounds * calls) for ns in spent.values())
    return (
        f"in process, GET /participant/1: {off:.1f} us CPU per request without the perf"
        f" middleware, {on:.1f} us with it: {on - off:+.1f} us"
    )


def publisher_alone(
    bootstrap: str, topic: str, setting: str, rate: int = 2000, seconds: float = 5.0
) -> str:
    """A perf publisher process fed `rate` records a second on a channel of its own, nothing else
    around it: its CPU per record, start-up left out (what a server's rounds cannot separate from
    the workers it shares the cores with)."""
    channel = PerfChannel()
    receiver = channel.receiver.fileno()
    with tempfile.TemporaryDirectory(prefix="feedsvc-publisher-") as data_dir:
        env = os.environ | {
            "FEED_DATA_DIR": data_dir,
            "FEED_KAFKA_BOOTSTRAP": bootstrap,
            "FEED_KAFKA_PERF_TOPIC": topic,
        }
        publisher = subprocess.Popen(
            [sys.executable, "-m", PUBLISHER_MODULE, str(receiver), "0"],
            pass_fds=(receiver,),
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(2.0)  # connected, and the topic's metadata known (or given up on)
            before = cpu_ns([publisher.pid])
            started, sent, dropped = time.monotonic(), 0, 0
            while (elapsed := time.monotonic() - started) < seconds:
                while sent < int(elapsed * rate):
                    try:
                        channel.sender.send(RECORD.pack(publisher.pid, time.time(), 0.001, 0))
                    except BlockingIOError:
                        dropped += 1
                    sent += 1
                time.sleep(0.001)
            time.sleep(1.0)  # what it read last is handed to kafka-python
            spent_ns = cpu_ns([publisher.pid]) - before
        finally:
            publisher.terminate()
            publisher.wait()
            channel.sender.close()
            channel.receiver.close()
    return (
        f"perf publisher alone, broker {setting}, {rate} records/s for {seconds:.0f} s:"
        f" {spent_ns / sent / 1000:.1f} us CPU per record ({dropped} found the channel full)"
    )


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
    """Throughput and CPU per request of each server, against Kafka off and events only."""
    off, events = measured[0], measured[1]
    lines = [
        f"{'kafka':<7} {'req/s':>7} {'vs off':>7} {'vs events':>9} {'p50 ms':>7} {'p95 ms':>7}"
        f" {'errors':>6} {'worker us/req':>13} {'vs off':>7} {'vs events':>9}"
        f" {'of it background':>16} {'publisher us/req':>16} {'broker us/req':>13}"
    ]
    for m in measured:
        worker_cpu = statistics.fmean(m.worker_cpu)
        lines.append(
            f"{m.setting:<7} {m.mean('rpm') / 60:>7.0f} {m.mean('rpm') / off.mean('rpm'):>7.1%}"
            f" {m.mean('rpm') / events.mean('rpm'):>9.1%}"
            f" {m.mean('p50_ms'):>7.2f} {m.mean('p95_ms'):>7.2f} {m.errors:>6}"
            f" {worker_cpu:>13.1f} {worker_cpu - statistics.fmean(off.worker_cpu):>+7.1f}"
            f" {worker_cpu - statistics.fmean(events.worker_cpu):>+9.1f}"
            f" {statistics.fmean(m.background_cpu):>16.1f}"
            f" {statistics.fmean(m.publisher_cpu):>16.1f}"
            f" {statistics.fmean(m.broker_cpu):>13.1f}"
        )
    return "\n".join(lines)


def perf_accounting(measured: list[Measured]) -> str:
    """Each perf-publishing server's API requests against its records published and dropped."""
    lines = []
    for m in measured:
        if m.setting in ("off", "events"):
            continue
        totals = metric_totals(m.server)
        lines.append(
            f"kafka {m.setting}: {totals['api_requests']:.0f} API requests served,"
            f" {totals.get(f'{PERF_PUBLISHED}_total', 0):.0f} perf"
            f" records published, {totals.get(f'{PERF_DROPPED}_total', 0):.0f} dropped,"
            f" {totals.get(PERF_QUEUED, 0):.0f} waiting in the publisher"
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
        bootstrap = {
            "off": None,
            "events": broker.bootstrap,
            "up": broker.bootstrap,
            "down": outage.bootstrap,
        }
        brokers = {"events": broker, "up": broker, "down": outage}
        measured = []
        for setting in SETTINGS:
            data_dir = root / setting
            env = {"FEED_DATA_DIR": str(data_dir)}
            if bootstrap[setting]:
                env |= {
                    "FEED_KAFKA_BOOTSTRAP": bootstrap[setting],
                    "FEED_KAFKA_PERF_TOPIC": perf_topic,
                    "FEED_KAFKA_EVENTS_TOPIC": events_topic,
                    "FEED_KAFKA_PERF_RECORDS": str(setting != "events").lower(),
                }
            server = GunicornServer(root / f"gunicorn-{setting}.log")
            stack.callback(server.kill)
            server.start(env, workers=args.workers)
            server.wait_ready(workers=args.workers)
            measured.append(Measured(setting, server, data_dir, brokers.get(setting)))
        for number in range(args.rounds):
            for m in measured:
                print(f"round {number + 1}/{args.rounds}: kafka {m.setting}", file=sys.stderr)
                m.measure_round(args, root / "report.json")
        print(table(measured))
        print(perf_accounting(measured))
        print(drain(outage, events_topic, measured[-1].data_dir))
        by_setting = {m.setting: m for m in measured}
        print(paired_worker_cost(by_setting["events"], by_setting["up"]))
        print(paired_worker_cost(by_setting["off"], by_setting["up"]))
        print(in_process_cost(root / "in-process"))
        print(publisher_alone(broker.bootstrap, perf_topic, "up"))
        print(publisher_alone(f"127.0.0.1:{free_port()}", perf_topic, "down"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

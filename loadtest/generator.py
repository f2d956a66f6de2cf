"""The load generator: one process per core, each a selector loop over keep-alive connections.

Closed loop (no rate): each user sends its next request when its previous one is answered, as
fast as the service answers: the maximum throughput. Open loop (a rate): each process schedules
requests at a constant arrival rate, t_k = t0 + k / rate, whatever the service does; a latency is
measured from the request's scheduled time, so a stall counts for every request it delays
(no coordinated omission). A slot that finds no idle connection opens another, up to a bound, or
waits as a late request for the next free one: none is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import math
import multiprocessing
import os
import queue
import random
import selectors
import socket
import sys
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue as ProcessQueue
from multiprocessing.synchronize import Barrier
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtest.connection import Connection, ProtocolError, Request, Response
from loadtest.report import (
    OperationSummary,
    cpu_share,
    histogram_of,
    merged,
    per_second_series,
    summarize_all,
)
from loadtest.scenarios import MODES, User, UserLoop, World, is_searcher

ERROR_BACKOFF_SECONDS = 0.1  # a user whose request failed in transport waits before the next one
PROGRESS_FLUSH_SECONDS = 0.25
START_TIMEOUT_SECONDS = 60.0
RESULT_GRACE_SECONDS = 60.0
DRAIN_SECONDS = 5.0  # open loop: requests in flight at the end are awaited this long, then failed
US_PER_SECOND = 1_000_000


# The LoadPlan fields a command's options may carry under the same names.
_LOAD_OPTIONS = (
    "mode", "concurrency", "duration", "processes", "search_percent", "seed", "rate",
    "max_connections",
)  # fmt: skip


@dataclass(frozen=True)
class LoadPlan:
    """Everything one run needs; picklable, so each generator process gets a copy."""

    host: str
    port: int
    mode: str = "classic"
    concurrency: int = 16
    duration: float = 10.0
    processes: int = 0  # 0: one per core, never more than there are users
    search_percent: float = 10.0
    seed: int = 1
    rate: float | None = None  # open loop: arrivals/s over all processes; None: closed loop
    max_connections: int = 0  # open loop: connections over all processes (0: 4 x concurrency)
    world: World = field(default_factory=World)

    @classmethod
    def from_options(
        cls, options: argparse.Namespace, host: str, port: int, **given: Any
    ) -> LoadPlan:
        """A plan from a command's parsed options: the load settings it has, defaults for the
        rest; `given` (the mode of a pair, a rate, a world) wins over both."""
        settings = {name: getattr(options, name) for name in _LOAD_OPTIONS if name in options}
        return cls(host=host, port=port, **(settings | given))

    @property
    def process_count(self) -> int:
        wanted = self.processes or os.cpu_count() or 1
        return max(1, min(wanted, self.concurrency))

    @property
    def connection_bound(self) -> int:
        return max(self.max_connections or 4 * self.concurrency, self.concurrency)


@dataclass(frozen=True)
class LoadResult:
    plan: LoadPlan
    summaries: list[OperationSummary]
    error_kinds: dict[str, int]
    wall_seconds: float
    cpu_seconds: float
    cores: int
    histograms: dict[str, HdrHistogram]
    per_second: list[dict[str, float]]
    late: int  # open loop: requests that waited for a free connection past their slot
    connections: int  # connections opened, including the ones opened before the start
    resends: int  # requests sent again because the server had closed an idle connection

    @property
    def generator_cpu_share(self) -> float:
        return cpu_share(self.cpu_seconds, self.wall_seconds, self.cores)

    @property
    def total(self) -> OperationSummary:
        return self.summaries[-1]

    def total_histogram(self) -> HdrHistogram:
        return merged(self.histograms.values())

    def as_dict(self) -> dict[str, object]:
        plan = self.plan
        return {
            "target": f"{plan.host}:{plan.port}",
            "mode": plan.mode,
            "concurrency": plan.concurrency,
            "processes": plan.process_count,
            "duration_s": round(self.wall_seconds, 3),
            "loop": "open" if plan.rate else "closed",
            "rate_limit_per_s": plan.rate,
            "late_requests": self.late,
            "connections": self.connections,
            "resends": self.resends,
            "search_percent": plan.search_percent,
            "seed": plan.seed,
            "generator_cpu_seconds": round(self.cpu_seconds, 3),
            "generator_cpu_share": round(self.generator_cpu_share, 4),
            "cores": self.cores,
            "operations": [summary.as_dict() for summary in self.summaries],
            "error_kinds": self.error_kinds,
            "per_second": self.per_second,
        }


@dataclass
class _ProcessResult:
    """Histograms travel encoded (compact, and merged by the parent as HDR histograms do)."""

    histograms: dict[str, bytes]
    per_second: dict[int, bytes]
    errors: Counter[str]
    errors_per_second: Counter[int]
    error_kinds: Counter[str]
    cpu_seconds: float
    wall_seconds: float
    late: int
    connections: int
    resends: int


Progress = Callable[[float, int, int], None]


def run_load(plan: LoadPlan, progress: Progress | None = None) -> LoadResult:
    """Forks the generator processes, starts them together and merges what they measured."""
    if plan.mode not in MODES:
        raise ValueError(f"unknown mode {plan.mode!r}; choose from {', '.join(MODES)}")
    count = plan.process_count
    context = multiprocessing.get_context("fork")
    start = context.Barrier(count + 1)
    counters = context.Array("q", 2 * count, lock=False)
    results = context.Queue()
    processes = [
        context.Process(
            target=_generator_process,
            args=(plan, index, count, start, counters, results),
            name=f"loadtest-{index}",
            daemon=True,
        )
        for index in range(count)
    ]
    for process in processes:
        process.start()
    try:
        start.wait(START_TIMEOUT_SECONDS)
        began = time.perf_counter()
        collected = _collect(plan, processes, results, counters, began, progress)
    finally:
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
    return _merge(plan, collected)


def _collect(
    plan: LoadPlan,
    processes: list[BaseProcess],
    results: ProcessQueue,
    counters: MutableSequence[int],
    began: float,
    progress: Progress | None,
) -> list[_ProcessResult]:
    collected: list[_ProcessResult] = []
    give_up = began + plan.duration + RESULT_GRACE_SECONDS
    while len(collected) < len(processes):
        try:
            collected.append(results.get(timeout=0.5))
        except queue.Empty:
            if time.perf_counter() > give_up or not any(p.is_alive() for p in processes):
                raise RuntimeError("a load generator process died without reporting") from None
        if progress is not None:
            elapsed = min(time.perf_counter() - began, plan.duration)
            progress(elapsed, sum(counters[0::2]), sum(counters[1::2]))
    return collected


def _decoded_sums(encoded: list[dict]) -> dict:
    """Merges the processes' encoded histograms key by key (operation or second)."""
    sums: dict = {}
    for histograms in encoded:
        for key, data in histograms.items():
            histogram = HdrHistogram.decode(data)
            if key in sums:
                sums[key].add(histogram)
            else:
                sums[key] = histogram
    return sums


def _merge(plan: LoadPlan, collected: list[_ProcessResult]) -> LoadResult:
    errors: Counter[str] = Counter()
    errors_per_second: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    for result in collected:
        errors.update(result.errors)
        errors_per_second.update(result.errors_per_second)
        kinds.update(result.error_kinds)
    wall = max(result.wall_seconds for result in collected)
    histograms = _decoded_sums([result.histograms for result in collected])
    seconds = _decoded_sums([result.per_second for result in collected])
    return LoadResult(
        plan=plan,
        summaries=summarize_all(histograms, errors, wall),
        error_kinds=dict(kinds),
        wall_seconds=wall,
        cpu_seconds=sum(result.cpu_seconds for result in collected),
        cores=os.cpu_count() or 1,
        histograms=histograms,
        per_second=per_second_series(seconds, errors_per_second, wall),
        late=sum(result.late for result in collected),
        connections=sum(result.connections for result in collected),
        resends=sum(result.resends for result in collected),
    )


def _generator_process(
    plan: LoadPlan,
    index: int,
    count: int,
    start: Barrier,
    counters: MutableSequence[int],
    results: ProcessQueue,
) -> None:
    """One generator process: every count-th user, connected before the common start."""
    loop = _EventLoop(plan, index, count, counters)
    loop.connect()
    start.wait(START_TIMEOUT_SECONDS)
    results.put(loop.run())


def _make_user(plan: LoadPlan, index: int) -> User:
    rng = random.Random(plan.seed * 1_000_003 + index)
    return User(index, rng, plan.world, searcher=is_searcher(index, plan.search_percent))


class _Driver:
    """A user bound to its connection; it asks the user's current loop for the next request."""

    def __init__(
        self, user: User, connection: Connection, mode: Callable[[User], UserLoop]
    ) -> None:
        self.user = user
        self.connection = connection
        self._mode = mode
        self._loop = mode(user)
        self._response: Response | None = None
        self.registered: tuple[socket.socket, int, int] | None = None  # socket, fd, events

    def next_request(self) -> Request:
        while True:
            try:
                if self._response is None:
                    return next(self._loop)
                response, self._response = self._response, None
                return self._loop.send(response)
            except StopIteration:
                self._loop = self._mode(self.user)

    def answer(self, response: Response) -> None:
        self._response = response


class _EventLoop:
    """One process's users: start requests (closed loop, or on schedule), read responses, record."""

    def __init__(
        self, plan: LoadPlan, slot: int, process_count: int, counters: MutableSequence[int]
    ) -> None:
        self._plan = plan
        self._counters = counters
        self._slot = slot
        self._process_count = process_count
        self._selector = selectors.DefaultSelector()
        self._mode = MODES[plan.mode]
        self._drivers: list[_Driver] = []
        for user_index in range(slot, plan.concurrency, process_count):
            self._add_driver(user_index)
        self._initial_users = len(self._drivers)
        self._ready: deque[_Driver] = deque(self._drivers)
        self._sleeping: list[tuple[float, int, _Driver]] = []
        # Open loop: this process's share of the rate and of the connection bound.
        self._interval = process_count / plan.rate if plan.rate else 0.0
        self._connection_bound = max(len(self._drivers), -(-plan.connection_bound // process_count))
        self._in_flight = 0
        self._began = 0.0
        self._latencies_us: dict[str, array] = {}
        self._seconds: array = array("l")  # completion second of each success, in order
        self._seconds_latency_us: array = array("q")
        self._errors: Counter[str] = Counter()
        self._errors_per_second: Counter[int] = Counter()
        self._kinds: Counter[str] = Counter()
        self._late = 0
        self._done = 0

    def _add_driver(self, user_index: int) -> _Driver:
        connection = Connection(self._plan.host, self._plan.port)
        driver = _Driver(_make_user(self._plan, user_index), connection, self._mode)
        self._drivers.append(driver)
        return driver

    def connect(self) -> None:
        """Opens every keep-alive connection; one that fails is retried by its first request."""
        for driver in self._drivers:
            with contextlib.suppress(OSError):
                driver.connection.open()

    def run(self) -> _ProcessResult:
        cpu_before = _cpu_seconds()
        self._began = time.perf_counter()
        deadline = self._began + self._plan.duration
        if self._interval:
            self._run_open(deadline)
        else:
            self._run_closed(deadline)
        wall = min(time.perf_counter(), deadline) - self._began
        cpu = _cpu_seconds() - cpu_before  # before the histograms are built: not load generation
        self._flush_progress()
        for driver in self._drivers:
            driver.connection.close()
        histograms = {
            operation: histogram_of(samples).encode()
            for operation, samples in self._latencies_us.items()
        }
        by_second: dict[int, array] = {}
        for second, latency in zip(self._seconds, self._seconds_latency_us, strict=True):
            by_second.setdefault(second, array("q")).append(latency)
        per_second = {second: histogram_of(v).encode() for second, v in by_second.items()}
        return _ProcessResult(
            histograms, per_second, self._errors, self._errors_per_second, self._kinds,
            cpu, wall, self._late, len(self._drivers),
            sum(driver.connection.resends for driver in self._drivers),
        )  # fmt: skip

    def _run_closed(self, deadline: float) -> None:
        """Every idle user starts its next request at once; a failed one backs off briefly."""
        next_flush = self._began + PROGRESS_FLUSH_SECONDS
        now = self._began
        while now < deadline:
            while self._sleeping and self._sleeping[0][0] <= now:
                self._ready.append(heapq.heappop(self._sleeping)[2])
            while self._ready:
                self._start(self._ready.popleft(), None)
            timeout = deadline - now
            if self._sleeping:
                timeout = min(timeout, self._sleeping[0][0] - now)
            self._poll(max(timeout, 0.0))
            now = time.perf_counter()
            if now >= next_flush:
                self._flush_progress()
                next_flush = now + PROGRESS_FLUSH_SECONDS

    def _run_open(self, deadline: float) -> None:
        """Slot k is due at t0 + k x interval; processes are phase-shifted to interleave."""
        t0 = self._began + self._interval * self._slot / self._process_count
        slots = max(0, math.ceil((deadline - t0) / self._interval))
        started = 0  # slots [started, due) are due and not yet sent
        late_through = 0  # slots below this were already counted late
        next_flush = self._began + PROGRESS_FLUSH_SECONDS
        now = self._began
        while now < deadline:
            due = min(slots, math.floor((now - t0) / self._interval) + 1)
            while started < due:
                driver = self._idle_driver()
                if driver is None:
                    self._late += due - max(started, late_through)
                    late_through = due
                    break
                self._start(driver, t0 + started * self._interval)
                started += 1
            timeout = deadline - now
            if started == due and due < slots:
                timeout = min(timeout, t0 + due * self._interval - now)
            self._poll(max(timeout, 0.0))
            now = time.perf_counter()
            if now >= next_flush:
                self._flush_progress()
                next_flush = now + PROGRESS_FLUSH_SECONDS
        self._unsent(slots - started)
        self._drain(deadline + DRAIN_SECONDS)

    def _idle_driver(self) -> _Driver | None:
        """An idle connection, or a new one (with a new user) while under the bound."""
        if self._ready:
            return self._ready.popleft()
        if len(self._drivers) < self._connection_bound:
            fresh = len(self._drivers) - self._initial_users
            user_index = self._plan.concurrency + self._slot + fresh * self._process_count
            return self._add_driver(user_index)
        return None

    def _unsent(self, count: int) -> None:
        """Slots that came due but found no connection before the end: failed, not skipped."""
        if count > 0:
            self._errors["unsent"] += count
            self._kinds["not sent: no free connection"] += count
            self._done += count

    def _drain(self, give_up: float) -> None:
        """Waits for the requests in flight at the end, so a late tail is still measured."""
        now = time.perf_counter()
        while self._in_flight and now < give_up:
            self._poll(give_up - now)
            now = time.perf_counter()
        for driver in self._drivers:
            request = driver.connection.request
            if driver.registered is not None and request is not None:
                self._unwatch(driver)
                self._count_error(request.operation, "unfinished after the drain", now)

    def _poll(self, timeout: float) -> None:
        for key, events in self._selector.select(timeout):
            self._on_event(key.data, events)

    def _start(self, driver: _Driver, scheduled: float | None) -> None:
        request = driver.next_request()
        self._in_flight += 1
        try:
            driver.connection.begin(request, scheduled)
        except (OSError, ProtocolError) as error:
            self._failed(driver, request, error)
            return
        self._watch(driver)

    def _on_event(self, driver: _Driver, events: int) -> None:
        connection = driver.connection
        request = connection.request
        if request is None:
            # An idle connection turned readable: the server closed it. Reconnect on next use.
            self._unwatch(driver)
            connection.close()
            return
        try:
            if events & selectors.EVENT_WRITE:
                connection.write_ready()
                response = None
            else:
                response = connection.read_ready()
        except (OSError, ProtocolError) as error:
            self._failed(driver, request, error)
            return
        if response is None:
            self._watch(driver)
            return
        self._in_flight -= 1
        self._record(request, response, connection.started)
        if connection.sock is None:
            self._unwatch(driver)  # closed (`Connection: close`): its fd is never left registered
        # An idle socket stays registered for reading: no epoll_ctl per request, and a close by
        # the server is seen while idle instead of on the next send.
        connection.request = None
        driver.answer(response)
        self._ready.append(driver)

    def _watch(self, driver: _Driver) -> None:
        """(Re-)registers the driver's current socket for what it waits on next."""
        sock = driver.connection.sock
        events = selectors.EVENT_WRITE if driver.connection.wants_write else selectors.EVENT_READ
        if driver.registered is not None and driver.registered[0] is not sock:
            self._unwatch(driver)
        if driver.registered is None:
            self._selector.register(sock, events, driver)
        elif driver.registered[2] != events:
            self._selector.modify(sock, events, driver)
        driver.registered = (sock, sock.fileno(), events)

    def _unwatch(self, driver: _Driver) -> None:
        """By fd number: the socket may already be closed (a resend or `Connection: close`)."""
        if driver.registered is not None:
            self._selector.unregister(driver.registered[1])
            driver.registered = None

    def _record(self, request: Request, response: Response, started: float) -> None:
        now = time.perf_counter()
        if 200 <= response.status < 400:
            self._done += 1
            latency_us = round((now - started) * US_PER_SECOND)
            samples = self._latencies_us.get(request.operation)
            if samples is None:
                samples = self._latencies_us[request.operation] = array("q")
            samples.append(latency_us)
            self._seconds.append(int(now - self._began))
            self._seconds_latency_us.append(latency_us)
        else:
            self._count_error(request.operation, f"HTTP {response.status}", now)

    def _count_error(self, operation: str, kind: str, now: float) -> None:
        self._done += 1
        self._errors[operation] += 1
        self._errors_per_second[int(now - self._began)] += 1
        self._kinds[kind] += 1

    def _failed(self, driver: _Driver, request: Request, error: Exception) -> None:
        """Transport failure: counted, connection dropped; in a closed loop the user backs off."""
        self._in_flight -= 1
        self._unwatch(driver)
        driver.connection.close()
        driver.connection.request = None
        now = time.perf_counter()
        self._count_error(request.operation, type(error).__name__, now)
        driver.answer(Response(0, b""))
        if self._interval:
            self._ready.append(driver)
        else:
            heapq.heappush(self._sleeping, (now + ERROR_BACKOFF_SECONDS, id(driver), driver))

    def _flush_progress(self) -> None:
        failed = sum(self._errors.values())
        self._counters[2 * self._slot] = self._done - failed
        self._counters[2 * self._slot + 1] = failed


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class ProgressLine:
    """The live line on stderr: redrawn in place on a terminal, every few seconds in a log."""

    LOG_EVERY_SECONDS = 5.0

    def __init__(self, label: str = "") -> None:
        self._label = f"{label}  " if label else ""
        self._tty = sys.stderr.isatty()
        self._last_logged = -self.LOG_EVERY_SECONDS

    def __call__(self, elapsed: float, completed: int, failed: int) -> None:
        if not self._tty and elapsed - self._last_logged < self.LOG_EVERY_SECONDS:
            return
        self._last_logged = elapsed
        rate = completed / elapsed if elapsed > 0 else 0.0
        line = (
            f"{self._label}{elapsed:6.1f}s {completed:>10,} ok {rate:>9,.0f} req/s"
            f" {failed:>6,} errors"
        )
        sys.stderr.write(f"\r{line}" if self._tty else f"{line}\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self._tty:
            sys.stderr.write("\n")
            sys.stderr.flush()

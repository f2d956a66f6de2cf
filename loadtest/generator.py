"""The load generator: one process per core, each a selector loop over keep-alive connections."""

from __future__ import annotations

import contextlib
import heapq
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

from loadtest.connection import Connection, ProtocolError, Request, Response
from loadtest.report import OperationSummary, cpu_share, summarize_all
from loadtest.scenarios import MODES, User, UserLoop, World, is_searcher

ERROR_BACKOFF_SECONDS = 0.1  # a user whose request failed in transport waits before the next one
PROGRESS_FLUSH_SECONDS = 0.25
START_TIMEOUT_SECONDS = 60.0
RESULT_GRACE_SECONDS = 60.0
RATE_CATCH_UP_SECONDS = 0.02  # a rate-limited loop woken late may catch up this much, no more


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
    rate: float | None = None  # requests/s over all processes; None: as fast as responses come
    world: World = field(default_factory=World)

    @property
    def process_count(self) -> int:
        wanted = self.processes or os.cpu_count() or 1
        return max(1, min(wanted, self.concurrency))


@dataclass(frozen=True)
class LoadResult:
    plan: LoadPlan
    summaries: list[OperationSummary]
    error_kinds: dict[str, int]
    wall_seconds: float
    cpu_seconds: float
    cores: int

    @property
    def generator_cpu_share(self) -> float:
        return cpu_share(self.cpu_seconds, self.wall_seconds, self.cores)

    @property
    def total(self) -> OperationSummary:
        return self.summaries[-1]

    def as_dict(self) -> dict[str, object]:
        plan = self.plan
        return {
            "target": f"{plan.host}:{plan.port}",
            "mode": plan.mode,
            "concurrency": plan.concurrency,
            "processes": plan.process_count,
            "duration_s": round(self.wall_seconds, 3),
            "rate_limit_per_s": plan.rate,
            "search_percent": plan.search_percent,
            "seed": plan.seed,
            "generator_cpu_seconds": round(self.cpu_seconds, 3),
            "generator_cpu_share": round(self.generator_cpu_share, 4),
            "cores": self.cores,
            "operations": [summary.as_dict() for summary in self.summaries],
            "error_kinds": self.error_kinds,
        }


@dataclass
class _ProcessResult:
    latencies_ms: dict[str, array]
    errors: Counter[str]
    error_kinds: Counter[str]
    cpu_seconds: float
    wall_seconds: float


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


def _merge(plan: LoadPlan, collected: list[_ProcessResult]) -> LoadResult:
    latencies: dict[str, array] = {}
    errors: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for result in collected:
        for operation, samples in result.latencies_ms.items():
            latencies.setdefault(operation, array("d")).extend(samples)
        errors.update(result.errors)
        kinds.update(result.error_kinds)
    wall = max(result.wall_seconds for result in collected)
    return LoadResult(
        plan=plan,
        summaries=summarize_all(latencies, errors, wall),
        error_kinds=dict(kinds),
        wall_seconds=wall,
        cpu_seconds=sum(result.cpu_seconds for result in collected),
        cores=os.cpu_count() or 1,
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
    user_indexes = range(index, plan.concurrency, count)
    loop = _EventLoop(plan, [_make_user(plan, n) for n in user_indexes], counters, index)
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
    """One process's users: start requests (paced when rate-limited), read responses, record."""

    def __init__(
        self, plan: LoadPlan, users: list[User], counters: MutableSequence[int], slot: int
    ) -> None:
        self._plan = plan
        self._counters = counters
        self._slot = slot
        self._selector = selectors.DefaultSelector()
        mode = MODES[plan.mode]
        self._drivers = [_Driver(user, Connection(plan.host, plan.port), mode) for user in users]
        self._ready: deque[_Driver] = deque(self._drivers)
        self._sleeping: list[tuple[float, int, _Driver]] = []
        rate_share = plan.rate * len(users) / plan.concurrency if plan.rate else 0.0
        self._interval = 1.0 / rate_share if rate_share else 0.0  # seconds between request starts
        self._latencies: dict[str, array] = {}
        self._errors: Counter[str] = Counter()
        self._kinds: Counter[str] = Counter()
        self._done = 0

    def connect(self) -> None:
        """Opens every keep-alive connection; one that fails is retried by its first request."""
        for driver in self._drivers:
            with contextlib.suppress(OSError):
                driver.connection.open()

    def run(self) -> _ProcessResult:
        cpu_before = _cpu_seconds()
        began = time.perf_counter()
        deadline = began + self._plan.duration
        next_slot = began
        next_flush = began + PROGRESS_FLUSH_SECONDS
        now = began
        while now < deadline:
            while self._sleeping and self._sleeping[0][0] <= now:
                self._ready.append(heapq.heappop(self._sleeping)[2])
            while self._ready and next_slot <= now:
                self._start(self._ready.popleft())
                if self._interval:
                    next_slot = max(next_slot + self._interval, now - RATE_CATCH_UP_SECONDS)
            timeout = deadline - now
            if self._ready and self._interval:
                timeout = min(timeout, next_slot - now)
            if self._sleeping:
                timeout = min(timeout, self._sleeping[0][0] - now)
            for key, events in self._selector.select(max(timeout, 0.0)):
                self._on_event(key.data, events)
            now = time.perf_counter()
            if now >= next_flush:
                self._flush_progress()
                next_flush = now + PROGRESS_FLUSH_SECONDS
        wall = time.perf_counter() - began
        self._flush_progress()
        for driver in self._drivers:
            driver.connection.close()
        return _ProcessResult(
            self._latencies, self._errors, self._kinds, _cpu_seconds() - cpu_before, wall
        )

    def _start(self, driver: _Driver) -> None:
        request = driver.next_request()
        try:
            driver.connection.begin(request)
        except (OSError, ProtocolError) as error:
            self._failed(driver, request, error)
            return
        self._watch(driver)

    def _on_event(self, driver: _Driver, events: int) -> None:
        connection = driver.connection
        request = connection.request
        assert request is not None
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
        self._record(request, response, time.perf_counter() - connection.started)
        self._unwatch(driver)  # idle users are not polled; a closed fd is never left registered
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
        """By fd number: the socket may already be closed (a retry or `Connection: close`)."""
        if driver.registered is not None:
            self._selector.unregister(driver.registered[1])
            driver.registered = None

    def _record(self, request: Request, response: Response, seconds: float) -> None:
        self._done += 1
        if 200 <= response.status < 400:
            samples = self._latencies.get(request.operation)
            if samples is None:
                samples = self._latencies[request.operation] = array("d")
            samples.append(seconds * 1000.0)
        else:
            self._errors[request.operation] += 1
            self._kinds[f"HTTP {response.status}"] += 1

    def _failed(self, driver: _Driver, request: Request, error: Exception) -> None:
        """Transport failure: counted, connection dropped, the user backs off briefly."""
        self._unwatch(driver)
        driver.connection.close()
        self._done += 1
        self._errors[request.operation] += 1
        self._kinds[type(error).__name__] += 1
        driver.answer(Response(0, b""))
        wake = time.perf_counter() + ERROR_BACKOFF_SECONDS
        heapq.heappush(self._sleeping, (wake, id(driver), driver))

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

"""The perf publisher in the process model: a child of the gunicorn master, restarted if it dies.

config/gunicorn.conf.py calls start() in on_starting (before any worker is forked, so every
worker inherits the channel), replace() on HUP (the new publisher starts reading before the old
one stops, so no record waits) and stop() on exit (after the workers are gone). A thread in the
master checks the publisher twice a second and restarts it with a growing delay when it dies;
the records a dead publisher held (its last queue depth) are handed to the next one started,
which counts them as dropped (reason publisher_exit). No Kafka code runs in the master, and it
creates no metric: a metrics file of its own could kill it (SIGBUS) on a full filesystem.
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Protocol

from prometheus_client import multiprocess

from feedsvc.adapters.kafka.perf_channel import (
    PUBLISHER_FLUSH_SECONDS,
    QUEUED_METRIC,
    PerfChannel,
    create_for_workers,
)

# What the publisher process runs: `python -m PUBLISHER_MODULE`.
PUBLISHER_MODULE = "feedsvc.adapters.kafka.perf_publisher"
CHECK_SECONDS = 0.5
# A stopping publisher is killed when it is still there this long after it was asked to stop.
STOP_SECONDS = PUBLISHER_FLUSH_SECONDS + 2.0
FIRST_RESTART_DELAY_SECONDS = 0.5
MAX_RESTART_DELAY_SECONDS = 30.0
# A publisher that ran this long before dying is restarted after the first delay again.
STABLE_SECONDS = 60.0
# systemd's variables are the master's: only it notifies, only it was handed the listeners.
_NOT_INHERITED = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class Log(Protocol):
    def info(self, msg: str, *args: object) -> None: ...
    def error(self, msg: str, *args: object) -> None: ...


class PublisherSupervisor:
    """Keeps one perf publisher process reading the channel, from the master."""

    def __init__(self, channel: PerfChannel, log: Log) -> None:
        self._channel = channel
        self._log = log
        self._lock = threading.Lock()
        self._current: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        # Publishers asked to stop (a HUP replaced them), with the time to kill them at.
        self._retiring: list[tuple[subprocess.Popen[bytes], float]] = []
        self._restart_delay = FIRST_RESTART_DELAY_SECONDS
        self._restart_at = 0.0
        # Gone publishers that held records: their gauges count them until a successor takes over.
        self._gone_holding: list[int] = []
        self._stopping = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="perf-supervisor", daemon=True)

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._current.pid if self._current is not None else None

    def start(self) -> None:
        with self._lock:
            self._current = self._spawn()
        self._monitor.start()

    def replace(self) -> None:
        """HUP: a publisher with the new code starts, then the old one stops reading and flushes."""
        with self._lock:
            old, self._current = self._current, self._spawn()
            if old is not None:
                old.terminate()
                self._retiring.append((old, time.monotonic() + STOP_SECONDS))

    def stop(self) -> None:
        """After the workers exited: the channel ends, the publisher flushes and exits, bounded."""
        self._stopping.set()
        self._monitor.join()
        # The workers' copies are closed already; with the master's the channel ends, and the
        # publisher exits once it has published what was still in it.
        self._channel.sender.close()
        deadline = time.monotonic() + STOP_SECONDS
        with self._lock:
            processes = [process for process, _ in self._retiring]
            if self._current is not None:
                processes.append(self._current)
            self._current, self._retiring = None, []
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._log.error("perf publisher (pid %s) did not stop in time: killed", process.pid)
                process.kill()
                process.wait()
            self._account_exit(process)

    def _spawn(self) -> subprocess.Popen[bytes]:
        """A publisher that counts the records its dead predecessors held as dropped."""
        held = round(sum(queued_by(pid) for pid in self._gone_holding))
        for pid in self._gone_holding:
            multiprocess.mark_process_dead(pid)
        self._gone_holding = []
        receiver = self._channel.receiver.fileno()
        environ = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        process = subprocess.Popen(
            [sys.executable, "-m", PUBLISHER_MODULE, str(receiver), str(held)],
            pass_fds=(receiver,),
            env=environ,
            stdin=subprocess.DEVNULL,
        )
        self._started_at = time.monotonic()
        self._log.info("perf publisher started (pid %s)", process.pid)
        return process

    def _watch(self) -> None:
        while not self._stopping.wait(CHECK_SECONDS):
            with self._lock:
                self._check()

    def _check(self) -> None:
        now = time.monotonic()
        for process, kill_at in list(self._retiring):
            if process.poll() is not None:
                self._retiring.remove((process, kill_at))
                self._account_exit(process)
            elif now > kill_at:
                process.kill()
        if self._current is not None and self._current.poll() is not None:
            if now - self._started_at > STABLE_SECONDS:
                self._restart_delay = FIRST_RESTART_DELAY_SECONDS
            self._log.error(
                "perf publisher (pid %s) exited with %s; restarting in %.1f s",
                self._current.pid,
                self._current.returncode,
                self._restart_delay,
            )
            self._account_exit(self._current)
            self._current = None
            self._restart_at = now + self._restart_delay
            self._restart_delay = min(self._restart_delay * 2, MAX_RESTART_DELAY_SECONDS)
        if self._current is None and now >= self._restart_at:
            self._current = self._spawn()

    def _account_exit(self, process: subprocess.Popen[bytes]) -> None:
        """Its live gauge leaves /metrics, unless it held records: they await the next publisher."""
        if queued_by(process.pid) > 0:
            self._gone_holding.append(process.pid)
        else:
            multiprocess.mark_process_dead(process.pid)


def queued_by(pid: int) -> float:
    """The last queue depth a (gone) publisher wrote to its multiprocess gauge file."""
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]) / f"gauge_livesum_{pid}.db"
    if not path.exists():
        return 0.0
    for metric in multiprocess.MultiProcessCollector.merge([str(path)], accumulate=False):
        if metric.name == QUEUED_METRIC:
            return sum(sample.value for sample in metric.samples)
    return 0.0


_supervisor: PublisherSupervisor | None = None


def start(log: Log) -> None:
    """In the master's on_starting: the channel for the workers and the publisher reading it."""
    global _supervisor
    _supervisor = PublisherSupervisor(create_for_workers(), log)
    _supervisor.start()


def replace() -> None:
    if _supervisor is not None:
        _supervisor.replace()


def stop() -> None:
    if _supervisor is not None:
        _supervisor.stop()

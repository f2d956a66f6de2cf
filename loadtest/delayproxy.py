"""A TCP proxy that delays each direction by half a round-trip time: a remote database, locally.

python -m loadtest.delayproxy --target HOST:PORT --rtt-ms 1 prints `listening HOST:PORT`.
The kernel here has no `tc netem`, so the link's latency is simulated in user space: every chunk
read from one side is written to the other RTT/2 later. One delay for every chunk makes arrival
order deadline order, so one queue serves all connections. The loop is select(2) itself: its
timeout has microsecond resolution (epoll's has milliseconds), and a bare loop costs a fraction
of asyncio's CPU per chunk. At 0 ms chunks are forwarded at once, so a benchmark's 0 ms baseline
runs the same proxy as its delayed runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import select
import signal
import socket
import subprocess
import sys
import time
from collections import deque

from loadtest.harness.gunicorn import REPO_ROOT
from loadtest.harness.process import stop_process
from loadtest.machine import process_cpu_seconds

READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
RECV_BYTES = 256 * 1024
PAUSE_BYTES = 4 * 1024 * 1024  # a side whose partner has this much unsent is not read
PR_SET_TIMERSLACK = 29
TIMER_SLACK_NS = 1  # Linux's default 50 us slack would lengthen every sub-millisecond delay
LEAD_STEP_S = 2e-6  # the wake-up lead moves by this per delivery, toward the median lateness


class _End:
    """One socket of a proxied pair: what it reads goes to `partner`, what is due it sends."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.partner: _End = self
        self.unsent = bytearray()
        self.close_when_sent = False
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def deliver(self, data: bytes) -> None:
        """Sends now what the socket takes; the rest waits for it to be writable."""
        if self.closed:
            return
        if not self.unsent:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.close()
                return
            data = data[sent:]
        self.unsent += data

    def flush(self) -> None:
        try:
            sent = self.sock.send(self.unsent)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        del self.unsent[:sent]
        if not self.unsent and self.close_when_sent:
            self.close()

    def hang_up(self) -> None:
        """The partner's peer went away: close once everything it sent has been passed on."""
        if self.unsent:
            self.close_when_sent = True
        else:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
            if not self.partner.closed:
                self.partner.hang_up()


class Proxy:
    """All connections of one listener, delayed by `delay` seconds each way."""

    def __init__(self, listener: socket.socket, target: tuple[str, int], delay: float) -> None:
        listener.setblocking(False)
        self._listener = listener
        self._target = target
        self._delay = delay
        self._ends: list[_End] = []
        self._due: deque[tuple[float, _End, bytes | None]] = deque()  # None: hang up
        # select() wakes late by the scheduler's latency; waking this much early delivers the
        # median chunk on time (a step up when late, down when early tracks the median).
        self._lead = 0.0

    def run_forever(self) -> None:
        while True:
            timeout = None
            if self._due:
                timeout = max(0.0, self._due[0][0] - self._lead - time.monotonic())
            readers: list = [self._listener]
            readers += [end for end in self._ends if len(end.partner.unsent) < PAUSE_BYTES]
            writers = [end for end in self._ends if end.unsent]
            readable, writable, _ = select.select(readers, writers, [], timeout)
            for end in writable:
                if not end.closed:
                    end.flush()
            for ready in readable:
                if ready is self._listener:
                    self._accept()
                elif not ready.closed:
                    self._read(ready)
            self._release()
            if any(end.closed for end in self._ends):
                self._ends = [end for end in self._ends if not end.closed]

    def _accept(self) -> None:
        with contextlib.suppress(BlockingIOError):
            client, _ = self._listener.accept()
            try:
                upstream = socket.create_connection(self._target, timeout=READY_TIMEOUT_SECONDS)
            except OSError:
                client.close()
                return
            near, far = _End(client), _End(upstream)
            near.partner, far.partner = far, near
            self._ends += (near, far)

    def _read(self, end: _End) -> None:
        try:
            data: bytes | None = end.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            data = None
            end.closed = True
            end.sock.close()
        if self._delay:
            self._due.append((time.monotonic() + self._delay, end.partner, data))
        elif data is None:
            end.partner.hang_up()
        else:
            end.partner.deliver(data)

    def _release(self) -> None:
        due = self._due
        if not due:
            return
        now = time.monotonic()
        if due[0][0] - self._lead > now:
            return
        step = LEAD_STEP_S if now > due[0][0] else -LEAD_STEP_S
        self._lead = min(max(self._lead + step, 0.0), self._delay / 2)
        while due and due[0][0] - self._lead <= now:
            _, end, data = due.popleft()
            if data is None:
                end.hang_up()
            else:
                end.deliver(data)


def serve(listen: tuple[str, int], target: tuple[str, int], rtt_ms: float) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)
    listener = socket.create_server(listen, backlog=1024)
    host, port = listener.getsockname()[:2]
    print(f"listening {host}:{port}", flush=True)
    Proxy(listener, target, rtt_ms / 2000.0).run_forever()


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.delayproxy", description=__doc__)
    parser.add_argument("--target", type=parse_address, required=True)
    parser.add_argument("--listen", type=parse_address, default=("127.0.0.1", 0))
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="round trip added (ms)")
    args = parser.parse_args(argv)
    if args.rtt_ms < 0:
        sys.exit("delayproxy: --rtt-ms must not be negative")
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.listen, args.target, args.rtt_ms)
    return 0


class DelayProxy:
    """The proxy as a child process: started, its port read, its CPU measurable, then stopped."""

    def __init__(self, target: tuple[str, int], rtt_ms: float) -> None:
        self.target = target
        self.rtt_ms = rtt_ms
        self.host = "127.0.0.1"
        self.port = 0
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> DelayProxy:
        command = [
            sys.executable, "-m", "loadtest.delayproxy", "--target",
            f"{self.target[0]}:{self.target[1]}", "--rtt-ms", f"{self.rtt_ms:g}",
        ]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"delay proxy did not start (said {line!r})")
        self.host, self.port = parse_address(line.split()[1])
        return self

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        stop_process(process, signal.SIGTERM, STOP_TIMEOUT_SECONDS)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())

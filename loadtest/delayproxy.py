"""A TCP proxy that delays each direction by half a round-trip time: a remote database, locally.

python -m loadtest.delayproxy --target HOST:PORT --rtt-ms 1 prints `listening HOST:PORT`.
The kernel here has no `tc netem`, so the link's latency is simulated in user space: every chunk
read from one side is written to the other RTT/2 later, in order. asyncio's selector loop over
select(2) (whose timeout has microsecond resolution, unlike epoll's milliseconds) keeps the
delay accurate below a millisecond; at 0 ms the proxy forwards at once, so a benchmark's 0 ms
baseline pays the same proxy CPU as its delayed runs.
"""

from __future__ import annotations

import argparse
import asyncio
import selectors
import subprocess
import sys
from collections import deque

from loadtest.machine import process_cpu_seconds
from loadtest.server import REPO_ROOT

READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: what it receives goes to its partner after the delay."""

    def __init__(self, delay: float) -> None:
        self._delay = delay
        self._loop = asyncio.get_running_loop()
        self._held: deque[tuple[float, bytes]] = deque()
        self._closing = False
        self.transport: asyncio.Transport | None = None
        self.partner: _Side | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self._delay:
            self._partner_transport().write(data)
            return
        self._held.append((self._loop.time() + self._delay, data))
        if len(self._held) == 1:
            self._loop.call_at(self._held[0][0], self._release)

    def _release(self) -> None:
        now = self._loop.time()
        chunks = []
        while self._held and self._held[0][0] <= now:
            chunks.append(self._held.popleft()[1])
        if chunks:
            self._partner_transport().write(b"".join(chunks))
        if self._held:
            self._loop.call_at(self._held[0][0], self._release)
        elif self._closing:
            self._partner_transport().close()

    def eof_received(self) -> bool:
        self._hang_up()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._hang_up()

    def _hang_up(self) -> None:
        """Closes the partner once what this side received has been passed on."""
        self._closing = True
        if not self._held and self.partner is not None and self.partner.transport is not None:
            self.partner.transport.close()

    def pause_writing(self) -> None:
        """This socket's send buffer is full: stop reading what would fill it further."""
        if self.partner is not None and self.partner.transport is not None:
            self.partner.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.partner is not None and self.partner.transport is not None:
            self.partner.transport.resume_reading()

    def _partner_transport(self) -> asyncio.Transport:
        assert self.partner is not None and self.partner.transport is not None
        return self.partner.transport


class _Client(_Side):
    """The accepted side: holds its reads until the connection to the target is up."""

    def __init__(self, delay: float, target: tuple[str, int]) -> None:
        super().__init__(delay)
        self._target = target

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        self._loop.create_task(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        try:
            _, upstream = await self._loop.create_connection(
                lambda: _Side(self._delay), *self._target
            )
        except OSError:
            self.transport.close()
            return
        upstream.partner, self.partner = self, upstream
        if self.transport.is_closing():
            upstream.transport.close()
            return
        self.transport.resume_reading()


async def serve(listen: tuple[str, int], target: tuple[str, int], rtt_ms: float) -> None:
    delay = rtt_ms / 2000.0
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(delay, target), *listen)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


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
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        loop.run_until_complete(serve(args.listen, args.target, args.rtt_ms))
    except KeyboardInterrupt:
        pass
    finally:
        loop.close()
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
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
        )
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
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())

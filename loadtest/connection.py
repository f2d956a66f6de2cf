"""A minimal non-blocking HTTP/1.1 keep-alive connection: the generator's whole per-request cost."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import NamedTuple

RECV_BYTES = 256 * 1024
CONNECT_TIMEOUT_SECONDS = 5.0


class Request(NamedTuple):
    """What a simulated user asks for; `operation` names the report row (entity.operation)."""

    operation: str
    method: str
    path: str
    body: bytes | None = None


class Response(NamedTuple):
    """Status 0 means the request failed in transport (connection refused, reset, ...)."""

    status: int
    body: bytes


@dataclass(frozen=True)
class ParsedResponse:
    status: int
    body: bytes
    keep_alive: bool
    consumed: int


class ProtocolError(Exception):
    """The server sent something that is not an HTTP/1.x response we can frame."""


def encode_request(host: str, request: Request) -> bytes:
    """Bytes on the wire: only the headers the API needs, built without any HTTP library."""
    head = f"{request.method} {request.path} HTTP/1.1\r\nHost: {host}\r\n"
    if request.body is None:
        return f"{head}\r\n".encode("ascii")
    head += f"Content-Type: application/json\r\nContent-Length: {len(request.body)}\r\n\r\n"
    return head.encode("ascii") + request.body


def parse_response(buffer: bytes | bytearray, *, at_eof: bool = False) -> ParsedResponse | None:
    """Frames one response from the start of `buffer`, or returns None while it is incomplete."""
    header_end = buffer.find(b"\r\n\r\n")
    if header_end < 0:
        if at_eof:
            raise ProtocolError("connection closed inside the response headers")
        return None
    lines = bytes(buffer[:header_end]).split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    keep_alive = parts[0] == b"HTTP/1.1"
    length: int | None = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.strip().lower()
            keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
    body_start = header_end + 4
    if status in (204, 304) or 100 <= status < 200:
        return ParsedResponse(status, b"", keep_alive, body_start)
    if chunked:
        return _parse_chunked(buffer, body_start, status, keep_alive)
    if length is None:
        if not at_eof:
            return None
        return ParsedResponse(status, bytes(buffer[body_start:]), False, len(buffer))
    if len(buffer) - body_start < length:
        if at_eof:
            raise ProtocolError("connection closed inside the response body")
        return None
    end = body_start + length
    return ParsedResponse(status, bytes(buffer[body_start:end]), keep_alive, end)


def _parse_chunked(
    buffer: bytes | bytearray, position: int, status: int, keep_alive: bool
) -> ParsedResponse | None:
    body = bytearray()
    while True:
        size_end = buffer.find(b"\r\n", position)
        if size_end < 0:
            return None
        size = int(bytes(buffer[position:size_end]).split(b";")[0], 16)
        position = size_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", position)
            while trailer_end > position:
                position = trailer_end + 2
                trailer_end = buffer.find(b"\r\n", position)
            if trailer_end < 0:
                return None
            return ParsedResponse(status, bytes(body), keep_alive, trailer_end + 2)
        if len(buffer) < position + size + 2:
            return None
        body += buffer[position : position + size]
        position += size + 2


class Connection:
    """One keep-alive socket driven by a selector loop; one request in flight, no pipelining."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._host_header = f"{host}:{port}"
        self.sock: socket.socket | None = None
        self.request: Request | None = None
        self.started = 0.0
        self._outgoing = memoryview(b"")
        self._incoming = bytearray()
        self._reused = False
        self._retried = False
        self.resends = 0  # counted: a resend is reported, never silent

    @property
    def wants_write(self) -> bool:
        return bool(self._outgoing)

    def begin(self, request: Request, scheduled: float | None = None) -> None:
        """Starts a request and sends what fits now; its latency runs from `scheduled` if given."""
        self.request = request
        self.started = time.perf_counter() if scheduled is None else scheduled
        self._retried = False
        self._send_fresh()

    def write_ready(self) -> None:
        """Continues a partial send; a reset or broken pipe is the request's error."""
        sent = self._socket().send(self._outgoing)
        self._outgoing = self._outgoing[sent:]

    def read_ready(self) -> Response | None:
        """Reads what arrived; returns the Response once complete, None while more is due."""
        chunk = self._socket().recv(RECV_BYTES)
        if not chunk:
            if not self._incoming and self._may_retry():
                self._resend()
                return None
            parsed = parse_response(self._incoming, at_eof=True)
            self.close()
        else:
            self._incoming += chunk
            parsed = parse_response(self._incoming)
            if parsed is None:
                return None
            if not parsed.keep_alive:
                self.close()
        assert parsed is not None
        self._incoming = bytearray()
        self._reused = self.sock is not None
        return Response(parsed.status, parsed.body)

    def open(self) -> None:
        """Connects before the clock starts; an idle socket may go stale, so it counts as reused."""
        self._socket()
        self._reused = True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self._reused = False

    def _socket(self) -> socket.socket:
        if self.sock is None:
            sock = socket.create_connection((self.host, self.port), CONNECT_TIMEOUT_SECONDS)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            self.sock = sock
        return self.sock

    def _send_fresh(self) -> None:
        assert self.request is not None
        self._incoming = bytearray()
        self._outgoing = memoryview(encode_request(self._host_header, self.request))
        self.write_ready()

    def _may_retry(self) -> bool:
        """Only a reused idle connection the server closed (FIN, not reset) before answering."""
        return self._reused and not self._retried

    def _resend(self) -> None:
        self.close()
        self._retried = True
        self.resends += 1
        self._send_fresh()

"""A TCP proxy in front of a MySQL server that breaks the connection at the moment of COMMIT."""

from __future__ import annotations

import contextlib
import enum
import selectors
import socket
import threading
from collections.abc import Callable

# A COM_QUERY packet's payload for the statement mysqlclient's commit() sends.
_COMMIT = b"\x03commit"
_HEADER_BYTES = 4
_CHUNK_BYTES = 65536


class Cut(enum.Enum):
    """When the armed proxy breaks the client's connection at its next COMMIT."""

    # The server never sees the COMMIT: nothing is stored.
    BEFORE_COMMIT = "before"
    # The server commits and answers OK, which never reaches the client.
    AFTER_COMMIT = "after"


class CommitCutter:
    """Forwards 127.0.0.1:port to the server; once armed, cuts the next COMMIT it sees.

    `at_cut` runs at the cut (for instance, SIGKILL of the server), before the client's
    connection is closed, so the client sees the connection lost during COMMIT.
    """

    def __init__(self, server_port: int) -> None:
        self._server_port = server_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._armed: tuple[Cut, Callable[[], None]] | None = None
        self._lock = threading.Lock()
        self.cuts = 0
        self._stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str = "feed") -> str:
        return f"mysql+mysqldb://root@127.0.0.1:{self.port}/{database}"

    def arm(self, cut: Cut, at_cut: Callable[[], None] = lambda: None) -> None:
        with self._lock:
            self._armed = (cut, at_cut)

    def close(self) -> None:
        self._stopping = True
        self._listener.close()

    def _take_arm(self) -> tuple[Cut, Callable[[], None]] | None:
        with self._lock:
            armed, self._armed = self._armed, None
            if armed is not None:
                self.cuts += 1
            return armed

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self._server_port), timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        pending = b""
        # epoll, not select(): a long test run's process may hold descriptors above 1024.
        with client, server, selectors.DefaultSelector() as watched:
            watched.register(client, selectors.EVENT_READ)
            watched.register(server, selectors.EVENT_READ)
            while True:
                readable = {key.fileobj for key, _ in watched.select()}
                if server in readable:
                    data = server.recv(_CHUNK_BYTES)
                    if not data:
                        return
                    client.sendall(data)
                if client in readable:
                    data = client.recv(_CHUNK_BYTES)
                    if not data:
                        return
                    pending += data
                    if self._commit_in(pending) and (armed := self._take_arm()) is not None:
                        self._cut(server, pending, *armed)
                        return
                    server.sendall(pending)
                    pending = b""

    @staticmethod
    def _commit_in(data: bytes) -> bool:
        """Whether the client's bytes hold a COM_QUERY COMMIT packet (whole packets only)."""
        offset = 0
        while offset + _HEADER_BYTES <= len(data):
            length = int.from_bytes(data[offset : offset + 3], "little")
            payload = data[offset + _HEADER_BYTES : offset + _HEADER_BYTES + length]
            if payload.lower() == _COMMIT:
                return True
            offset += _HEADER_BYTES + length
        return False

    @staticmethod
    def _cut(server: socket.socket, pending: bytes, cut: Cut, at_cut: Callable[[], None]) -> None:
        if cut is Cut.AFTER_COMMIT:
            server.sendall(pending)
            server.settimeout(10)
            # The server's OK packet: the commit is durable on the server; the client never hears.
            with contextlib.suppress(OSError):
                server.recv(_CHUNK_BYTES)
        at_cut()

"""The connection resends once, and counts it, when the server closed an idle keep-alive socket."""

import selectors
import socket
import threading

from loadtest.connection import Connection, Request

RESPONSE = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}"


def one_request_per_connection_server(
    listener: socket.socket, connections: int, closed: threading.Semaphore
) -> None:
    """Answers one request per connection, then closes it: what an idle timeout looks like."""
    for _ in range(connections):
        client, _ = listener.accept()
        with client:
            client.recv(65536)
            client.sendall(RESPONSE)
        closed.release()


def exchange(connection: Connection, request: Request):
    """Drives one request the way the generator's selector loop does."""
    with selectors.DefaultSelector() as selector:
        connection.begin(request)
        while True:
            sock = connection.sock
            events = selectors.EVENT_WRITE if connection.wants_write else selectors.EVENT_READ
            selector.register(sock, events)
            selector.select(10)
            selector.unregister(sock)
            if events == selectors.EVENT_WRITE:
                connection.write_ready()
                continue
            response = connection.read_ready()
            if response is not None:
                return response


def test_reused_connection_closed_by_the_server_is_resent_and_counted():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        closed = threading.Semaphore(0)
        server = threading.Thread(
            target=one_request_per_connection_server, args=(listener, 3, closed), daemon=True
        )
        server.start()
        connection = Connection("127.0.0.1", listener.getsockname()[1])
        request = Request("hello.get", "GET", "/")
        statuses = []
        for _ in range(3):
            statuses.append(exchange(connection, request).status)
            # The server's close reaches the idle socket before it is reused: the case at hand,
            # not a request racing the close (a reset, which is an error and never resent).
            assert closed.acquire(timeout=10)
        connection.close()
        server.join(10)
    assert statuses == [200, 200, 200]
    assert connection.resends == 2

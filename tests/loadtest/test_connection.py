"""HTTP framing of the generator's own client, on synthetic byte strings."""

import pytest

from loadtest.connection import ProtocolError, Request, encode_request, parse_response


def test_request_bytes_carry_host_and_json_body():
    wire = encode_request("h:1", Request("x", "POST", "/participant", b'{"name":"a"}'))
    assert wire == (
        b"POST /participant HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 12\r\n\r\n{"name":"a"}'
    )
    assert encode_request("h:1", Request("x", "GET", "/")) == b"GET / HTTP/1.1\r\nHost: h:1\r\n\r\n"


def test_content_length_response_and_what_follows_it():
    wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}NEXT"
    parsed = parse_response(wire)
    assert (parsed.status, parsed.body, parsed.keep_alive) == (200, b"{}", True)
    assert wire[parsed.consumed :] == b"NEXT"


def test_incomplete_headers_or_body_wait_for_more():
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Le") is None
    assert parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{}") is None


def test_connection_close_and_http_1_0_are_not_kept_alive():
    closing = parse_response(
        b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    assert (closing.status, closing.keep_alive) == (404, False)
    old = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not old.keep_alive
    kept = parse_response(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
    assert kept.keep_alive


def test_chunked_body_is_reassembled():
    wire = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
    )
    parsed = parse_response(wire)
    assert parsed.body == b"abcde"
    assert parsed.consumed == len(wire)
    assert parse_response(wire[:-2]) is None


def test_body_without_length_runs_to_end_of_stream():
    wire = b"HTTP/1.1 200 OK\r\n\r\nabc"
    assert parse_response(wire) is None
    parsed = parse_response(wire, at_eof=True)
    assert (parsed.body, parsed.keep_alive) == (b"abc", False)


def test_truncated_or_garbled_responses_are_protocol_errors():
    with pytest.raises(ProtocolError):
        parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", at_eof=True)
    with pytest.raises(ProtocolError):
        parse_response(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(ProtocolError):
        parse_response(b"HTTP/1.1 200", at_eof=True)

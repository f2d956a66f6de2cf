"""The remote-database harness: a private mariadbd behind proxies, reachable, then gone."""

import os

import MySQLdb
import pytest

from loadtest.remote import parse_rtts, remote_links


def test_rtts_parse_and_refuse_negatives_and_duplicates():
    assert parse_rtts("0,0.5,1") == [0.0, 0.5, 1.0]
    for bad in ("-1", "1,1"):
        with pytest.raises(ValueError):
            parse_rtts(bad)


def test_links_reach_one_private_server_with_their_delay_and_leave_nothing_behind(needs_mariadbd):
    with remote_links([0.0, 4.0]) as (direct, delayed):
        server = direct.server
        assert delayed.server is server
        url = delayed.database("remote_check")
        assert url.endswith(f":{delayed.proxy.port}/remote_check")
        connection = MySQLdb.connect(
            host="127.0.0.1", port=delayed.proxy.port, user="root", database="remote_check"
        )
        with connection:
            cursor = connection.cursor()
            cursor.execute("SELECT DATABASE(), @@port")
            assert cursor.fetchone() == ("remote_check", server.port)
        assert delayed.measured_rtt_ms() >= 0.9 * 4.0  # a median: the proxy aims at on time
        assert direct.measured_rtt_ms() < delayed.measured_rtt_ms()
        pids = [server.process.pid, direct.proxy.process.pid, delayed.proxy.process.pid]
        base_dir = server.base_dir
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    assert not base_dir.exists()

"""The real run path on MariaDB: gunicorn workers ride out a database outage without a restart."""

import signal


def test_gunicorn_serves_mariadb_and_recovers_from_an_outage(gunicorn_server, private_mariadb):
    gunicorn_server.start({"FEED_DATABASE_URL": private_mariadb.url}, workers=2)
    gunicorn_server.wait_ready(workers=2)
    workers = gunicorn_server.worker_pids()

    ada = gunicorn_server.request("POST", "/participant", {"name": "Ada"}).json
    bob = gunicorn_server.request("POST", "/participant", {"name": "Bob"}).json
    befriended = gunicorn_server.request("POST", f"{ada['link']}/friends", {"to": bob["link"]})
    assert befriended.status == 200, befriended.body

    private_mariadb.stop(signal.SIGKILL)
    # Several requests, so that both workers' pools meet the dead server.
    for _ in range(6):
        down = gunicorn_server.request("GET", ada["link"])
        assert down.status == 503, down.body
        assert down.json["title"] == "Database unavailable"
        assert down.headers["Retry-After"] == "1"
    refused = gunicorn_server.request(
        "POST", f"{ada['link']}/outbound", {"subject": "s", "story": "x"}
    )
    assert refused.status == 503, refused.body

    private_mariadb.start()
    for _ in range(6):
        assert gunicorn_server.request("GET", ada["link"]).status == 200
    posted = gunicorn_server.request(
        "POST", f"{ada['link']}/outbound", {"subject": "s", "story": "after the outage"}
    )
    assert posted.status == 200, posted.body
    inbound = gunicorn_server.request("GET", f"{bob['link']}/inbound").json
    assert [item["story"] for item in inbound] == ["after the outage"]
    found = gunicorn_server.request("GET", "/outbound?keywords=outage").json
    assert found == [ada["link"]]

    assert gunicorn_server.worker_pids() == workers  # recovered in place, nothing restarted
    assert gunicorn_server.stop() == 0, gunicorn_server.log()

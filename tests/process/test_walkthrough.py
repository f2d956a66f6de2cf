"""The real run path: gunicorn with config/gunicorn.conf.py, 2 workers, the README walkthrough."""

import time

# Search is near-real-time: a post is findable within a second; a contended machine gets more.
FINDABLE_DEADLINE_SECONDS = 10.0


def test_readme_walkthrough_over_http_against_gunicorn(gunicorn_server, tmp_path):
    data_dir = tmp_path / "data"
    gunicorn_server.start({"FEED_DATA_DIR": str(data_dir)}, workers=2)
    gunicorn_server.wait_ready(workers=2)

    ann = gunicorn_server.request("POST", "/participant", {"name": "Ann"})
    assert ann.status == 200, ann.body
    bob = gunicorn_server.request("POST", "/participant", {"name": "Bob"})
    assert bob.status == 200, bob.body
    ann_link, bob_link = ann.json["link"], bob.json["link"]

    friendship = gunicorn_server.request("POST", f"{ann_link}/friends", {"to": bob_link})
    assert friendship.status == 200, friendship.body
    assert (friendship.json["from"], friendship.json["to"]) == (ann_link, bob_link)

    story = {"subject": "hello", "story": "first post from the embedded feed"}
    post = gunicorn_server.request("POST", f"{ann_link}/outbound", story)
    assert post.status == 200, post.body
    assert post.json["from"] == ann_link

    inbound = gunicorn_server.request("GET", f"{bob_link}/inbound")
    assert inbound.status == 200, inbound.body
    assert inbound.json == [{**post.json, "to": bob_link}]

    deadline = time.monotonic() + FINDABLE_DEADLINE_SECONDS
    while (found := gunicorn_server.request("GET", "/outbound?keywords=embedded+feed")).json == []:
        assert time.monotonic() < deadline, "the post was not findable within the bound"
        time.sleep(0.02)
    assert found.status == 200, found.body
    assert found.json == [ann_link]

    assert gunicorn_server.stop() == 0, gunicorn_server.log()

"""Room events on the bus: what a server publishes decodes to what it meant,
and anything else on the channel is a clean drop, never a dead listener."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from common.chat import events as ev
from common.ports import Posted
from tests.cluster.conftest import MakeServer
from tests.tcp.conftest import FramedClient
from twinchat.cluster import codec

SAMPLES = [
    Posted(("#dev",), ev.Message("#Dev", "ann", "hi | there, é 👋", 0, 1700000000000), 3, False),
    Posted(("#dev",), ev.Action("#Dev", "ann", "waves", 0, 5), 3, True),
    Posted(("#dev",), ev.Joined("#Dev", "ann"), 3, False),
    Posted(("#dev",), ev.Parted("#Dev", "ann", "later"), 3, False),
    Posted(("#dev", "#ops"), ev.Left("ann", "quit"), 3, False),
    Posted(("#dev", "#ops"), ev.Renamed("ann", "anna"), 3, False),
    Posted(("#dev",), ev.Topic("#Dev", "ship it", "ann", 17, True), 3, True),
    Posted((), ev.Private("ann", "psst", 9), 3, False, to="bob"),
]


@pytest.mark.parametrize("posted", SAMPLES, ids=lambda p: type(p.event).__name__)
def test_what_a_server_publishes_comes_back_as_it_was(posted: Posted) -> None:
    at = tuple(range(41, 41 + len(posted.rooms)))
    payload = ",".join(map(str, at)) + "|" + codec.body(posted, "srv1")
    back = codec.decode(payload.encode(), "srv1")
    event = posted.event
    if isinstance(event, ev.Message | ev.Action):  # numbered by Redis: its seq is the first of AT
        event = dataclasses.replace(event, seq=at[0])
    assert back == posted._replace(event=event, at=at)
    # On another server the origin is nobody of its own.
    assert codec.decode(payload, "srv2").origin == 0


@given(st.text(max_size=200))
def test_anything_else_is_bad_payload_and_nothing_else(text: str) -> None:
    with contextlib.suppress(codec.BadPayload):
        codec.decode(text, "srv1")


@pytest.mark.parametrize(
    "payload",
    [
        "",
        "|",
        "1|{}",
        'x|{"k":"Message"}',
        '1|{"k":"Nope","f":[],"r":["#a"],"o":"","e":1}',
        '1,2|{"k":"Joined","f":["#a","ann"],"r":["#a"],"o":"","e":1}',
        '1|{"k":"Joined","f":["#a",""],"r":["#a"],"o":"","e":1}',
        '1|{"k":"Joined","f":["#a"],"r":["#a"],"o":"","e":1}',
        '|{"k":"Private","f":["ann","hi",1,false],"r":[],"o":"","e":0}',
        b"\xff\xfe|garbage",
    ],
)
def test_malformed_payloads_are_refused(payload: str | bytes) -> None:
    with pytest.raises(codec.BadPayload):
        codec.decode(payload, "srv1")


def test_garbage_on_the_channel_is_dropped_and_the_chat_goes_on(redis_url: str, make_node: MakeServer) -> None:
    a, b = make_node(redis_url), make_node(redis_url)
    alice, bob = FramedClient(a.address), FramedClient(b.address)
    db = redis.Redis.from_url(redis_url, protocol=2)
    try:
        alice.register("alice")
        bob.register("bob")
        for junk in (b"", b"\xff\x00", b"7|{}", b'99|{"k":"Left","f":["x","y"],"r":["#nowhere"],"o":"","e":1}'):
            db.publish("twinchat:bus", junk)
        alice.send(ev.Say("#lobby", "still here"))
        for client in (alice, bob):
            for _ in range(50):
                event = client.next()
                if isinstance(event, ev.Message):
                    break
            assert isinstance(event, ev.Message) and event.text == "still here", event
    finally:
        db.close()
        alice.close()
        bob.close()

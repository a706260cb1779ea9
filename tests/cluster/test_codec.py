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
    (back,) = codec.decode(payload.encode(), "srv1")
    event = posted.event
    if isinstance(event, ev.Message | ev.Action):  # numbered by Redis: its seq is the first of AT
        event = dataclasses.replace(event, seq=at[0])
    assert back == posted._replace(event=event, at=at)
    # On another server the origin is nobody of its own.
    assert codec.decode(payload, "srv2")[0].origin == 0


def test_a_run_of_one_rooms_messages_is_one_payload_numbered_in_a_row() -> None:
    run = [Posted(("#dev",), ev.Message("#Dev", f"u{i}", f"line {i}", 0, 5), i + 1, i % 2 == 0) for i in range(3)]
    back = codec.decode("7|" + codec.bodies(run, "srv1"), "srv1")
    assert [(p.event.seq, p.at, p.event.text, p.origin, p.echo) for p in back] == [  # type: ignore[attr-defined]
        (7, (7,), "line 0", 1, True),
        (8, (8,), "line 1", 2, False),
        (9, (9,), "line 2", 3, True),
    ]


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
        "1|[]",
        'x|["Message"]',
        '1|["Nope",[],["#a"],"",1,""]',
        '1,2|["Joined",["#a","ann"],["#a"],"",1,""]',
        '1|["Joined",["#a",""],["#a"],"",1,""]',
        '1|["Joined",["#a"],["#a"],"",1,""]',
        '|["Private",["ann","hi",1,false],[],"",0,""]',
        '0|[["Message",["#a","ann","hi",0,1,false],["#a"],"",1,""]]',
        '3|[["Joined",["#a","ann"],["#a"],"",1,""]]',
        '3|[["Message",["#a","ann","hi",0,1,false],["#a"],"",1,""],["Message",["#b","ann","hi",0,1,false],["#b"],"",1,""]]',
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
        for junk in (b"", b"\xff\x00", b"7|{}", b'99|["Left",["x","y"],["#nowhere"],"",1,""]'):
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

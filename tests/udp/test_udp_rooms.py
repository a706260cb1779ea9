"""Rooms over the UDP transport, reliable and ``--unreliable``, on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from common.chat import events as ev
from common.chat.rooms import LOBBY
from tests.udp.harness import PATIENCE, Member, members
from udpchat.server import ChatServer


@pytest.fixture(params=[False, True], ids=["reliable", "unreliable"])
def server(request: pytest.FixtureRequest) -> Iterator[ChatServer]:
    srv = ChatServer(port=0, rate_limit=0, unreliable=request.param)
    srv.start()
    yield srv
    srv.shutdown()


def join(member: Member, room: str, *others: Member) -> None:
    """``member`` joins ``room``: it sees its own join, and so does each of ``others`` (in the room)."""
    member.link.send(ev.Join(room))
    for m in (member, *others):
        assert m.wait_for(lambda m: m.has(ev.Joined, room=room, nick=member.nick))


def test_messages_reach_only_the_rooms_members(server: ChatServer) -> None:
    with members(server.address, "ann", "bob", "cat") as (ann, bob, cat):
        join(ann, "#dev")
        join(bob, "#dev", ann)
        ann.link.send(ev.Say("#dev", "for #dev"))
        ann.link.send(ev.Act("#dev", "waves in #dev"))
        assert bob.wait_for(lambda m: m.has(ev.Action, room="#dev", sender="ann"))
        assert bob.said_in("#dev") == [("ann", "for #dev")]
        # cat is only in the lobby. What the server sends a member comes in one
        # order, so once cat has a lobby message said after the room's, any of
        # the room's events for cat would have come before it.
        ann.link.send(ev.Say(LOBBY, "for the lobby"))
        assert cat.wait_for(lambda m: m.has(ev.Message, room=LOBBY, text="for the lobby"))
        assert bob.wait_for(lambda m: m.has(ev.Message, room=LOBBY, text="for the lobby"))
        assert cat.said_in("#dev") == []
        assert not cat.has(ev.Joined, room="#dev") and not cat.has(ev.Action, room="#dev")
        bob.link.send(ev.Part("#dev", "done"))
        for m in (ann, bob):
            assert m.wait_for(lambda m: m.has(ev.Parted, room="#dev", nick="bob", reason="done"))
        ann.link.send(ev.Say("#dev", "after bob left"))
        ann.link.send(ev.Say(LOBBY, "second marker"))
        assert bob.wait_for(lambda m: m.has(ev.Message, room=LOBBY, text="second marker"))
        assert bob.said_in("#dev") == [("ann", "for #dev")]  # bob left #dev: no more of it
        bob.link.send(ev.Say(LOBBY, "bob's marker"))
        assert ann.wait_for(lambda m: m.has(ev.Message, room=LOBBY, text="bob's marker"))
        # A sender hears itself, once, numbered in the room's order.
        assert ann.said_in("#dev") == [("ann", "for #dev"), ("ann", "after bob left")]
        assert ann.seqs("#dev") == [1, 3]  # 2 was the action


def test_every_member_of_a_room_sees_its_messages_in_one_order(server: ChatServer) -> None:
    per_sender = 40
    with members(server.address, "ann", "bob", "cat", "dan") as (ann, bob, cat, dan):
        room = [ann, bob, cat]
        for i, m in enumerate(room):
            join(m, "#ops", *room[:i])
        start = threading.Barrier(len(room))
        failures: list[BaseException] = []

        def talk(m: Member) -> None:
            try:
                start.wait(PATIENCE)
                for n in range(per_sender):
                    m.link.send(ev.Say("#ops", f"{m.nick} {n}"))
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        threads = [threading.Thread(target=talk, args=(m,)) for m in room]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(PATIENCE)
        assert not failures
        assert not any(thread.is_alive() for thread in threads)
        # Each member hears every message once, its own echoed among the others'.
        for m in room:
            expected = len(room) * per_sender
            assert m.wait_for(lambda m, n=expected: len(m.said_in("#ops")) == n)
        views = {m.nick: m.said_in("#ops") for m in room}
        for view in views.values():
            for other in room:  # each sender's own order is kept
                assert [t for s, t in view if s == other.nick] == [f"{other.nick} {n}" for n in range(per_sender)]
        # One order for the whole room, numbered as it came: every member has
        # the same view, the sender's own messages included.
        for m in room:
            assert views[m.nick] == views[ann.nick]
            assert m.seqs("#ops") == list(range(1, len(room) * per_sender + 1))
        # dan, in the lobby only, heard none of it.
        ann.link.send(ev.Say(LOBBY, "done"))
        assert dan.wait_for(lambda m: m.has(ev.Message, room=LOBBY, text="done"))
        assert dan.said_in("#ops") == []
        assert not dan.has(ev.Joined, room="#ops")

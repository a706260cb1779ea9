"""Rooms over real TCP sockets: framed clients, people at nc, and both together."""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable

import pytest

from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.wire.errors import ErrorCode
from common.wire.framing import HEADER, MAGIC, VERSION, FrameType
from tcpchat.server import ChatServer

from .conftest import FramedClient, LineClient, bare

MakeServer = Callable[..., ChatServer]
MakeClient = Callable[..., FramedClient]
MakeLine = Callable[[tuple[str, int]], LineClient]


def registered(make: MakeClient, address: tuple[str, int], *nicks: str) -> list[FramedClient]:
    """Framed members, registered in order; each has seen every later one join the lobby."""
    made = []
    for nick in nicks:
        client = make(address)
        client.register(nick)
        made.append(client)
    for i, client in enumerate(made):
        assert [client.expect(ev.Joined) for _ in nicks[i + 1 :]] == [ev.Joined(LOBBY, n) for n in nicks[i + 1 :]]
    return made


def nothing_pending(client: FramedClient) -> None:
    """Prove ``client`` was sent nothing since its last read: it whispers itself
    a marker, which must be the very next event. The server handles requests
    one at a time and delivers in that order, so anything sent to the client
    before the marker would come first."""
    marker = f"marker {time.monotonic_ns()}"
    client.send(ev.Whisper(client.nick, marker))
    assert bare(client.expect(ev.Event)) == ev.Private(client.nick, marker)


def join_line(nc: LineClient, nick: str) -> None:
    """Register a person at nc and read their welcome and their own join."""
    nc.send(f"{nick}\n".encode())
    assert nc.line().startswith(f"*** welcome, {nick}")
    assert nc.line() == f"*** {nick} joined #lobby"


# --- framed clients ----------------------------------------------------------------


def test_only_the_members_of_a_room_hear_it(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob, carol = registered(clients, server.address, "alice", "bob", "carol")
    assert alice.join("#dev") == ev.Joined("#dev", "alice")
    assert bob.join("#dev") == ev.Joined("#dev", "bob")
    assert alice.expect(ev.Joined) == ev.Joined("#dev", "bob")  # members see the joiner
    alice.send(ev.Say("#dev", "hi dev"), ev.Act("#dev", "ships it"))
    said = [ev.Message("#dev", "alice", "hi dev"), ev.Action("#dev", "alice", "ships it")]
    assert [bare(bob.expect(ev.Message)), bare(bob.expect(ev.Action))] == said
    nothing_pending(carol)  # no join, message or action of #dev reached carol
    assert [bare(alice.expect(ev.Message)), bare(alice.expect(ev.Action))] == said  # alice's own, once
    nothing_pending(alice)
    bob.send(ev.Part("#dev", "lunch"))
    assert bob.expect(ev.Parted) == ev.Parted("#dev", "bob", "lunch")  # the parter is told too
    assert alice.expect(ev.Parted) == ev.Parted("#dev", "bob", "lunch")
    nothing_pending(carol)
    alice.send(ev.Say("#dev", "anyone?"))
    assert bare(alice.expect(ev.Message)) == ev.Message("#dev", "alice", "anyone?")  # handled: her echo is back
    nothing_pending(bob)  # bob left #dev: he hears no more of it
    bob.send(ev.Say("#dev", "let me back"))
    error = bob.expect(ev.Error)
    assert error.code is ErrorCode.NOT_IN_ROOM
    nothing_pending(alice)


def test_saying_to_a_room_one_is_not_in_is_refused(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob = registered(clients, server.address, "alice", "bob")
    bob.join("#dev")
    for event in (ev.Say("#dev", "let me in"), ev.Act("#dev", "knocks"), ev.Say("#nowhere", "hello?")):
        alice.send(event)
        assert alice.expect(ev.Error).code is ErrorCode.NOT_IN_ROOM
    alice.send(ev.SetTopic("#dev", "mine now"), ev.Part("#dev", ""))
    assert [alice.expect(ev.Error).code for _ in range(2)] == [ErrorCode.NOT_IN_ROOM] * 2
    nothing_pending(bob)  # none of it reached the room
    alice.send(ev.Who())  # and the connection goes on
    assert alice.expect(ev.WhoReply) == ev.WhoReply("", ("alice", "bob"), more=False)


def test_names_rooms_and_topics(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob, carol = registered(clients, server.address, "alice", "bob", "carol")
    alice.join("#dev")
    before = int(time.time())
    alice.send(ev.SetTopic("#dev", "ship it"))
    topic = alice.expect(ev.Topic)
    after = int(time.time())
    assert (topic.room, topic.text, topic.setter, topic.changed) == ("#dev", "ship it", "alice", True)
    assert before <= topic.time <= after
    # A joiner is told the topic as it stands, after its own join.
    assert bob.join("#dev") == ev.Joined("#dev", "bob")
    assert bob.briefing is not None
    assert bob.briefing.topic == ev.Topic("#dev", "ship it", "alice", topic.time, changed=False)
    assert alice.expect(ev.Joined) == ev.Joined("#dev", "bob")
    carol.send(ev.Names("#dev"), ev.Names(LOBBY), ev.GetTopic("#dev"), ev.ListRooms())
    assert carol.expect(ev.WhoReply) == ev.WhoReply("#dev", ("alice", "bob"), more=False)
    assert carol.expect(ev.WhoReply) == ev.WhoReply(LOBBY, ("alice", "bob", "carol"), more=False)
    assert carol.expect(ev.Topic) == ev.Topic("#dev", "ship it", "alice", topic.time, changed=False)
    assert carol.expect(ev.RoomList) == ev.RoomList(
        (ev.RoomInfo("#dev", 2, "ship it"), ev.RoomInfo(LOBBY, 3, "")), more=False
    )
    # Every member of the room hears a change of topic; carol, not in it, does not.
    bob.send(ev.SetTopic("#dev", ""))
    cleared = alice.expect(ev.Topic)
    assert (cleared.room, cleared.text, cleared.setter, cleared.changed) == ("#dev", "", "bob", True)
    assert bob.expect(ev.Topic) == cleared
    nothing_pending(carol)
    carol.send(ev.GetTopic("#dev"), ev.Names("#nowhere"), ev.GetTopic("#nowhere"))
    assert carol.expect(ev.Topic) == ev.Topic("#dev", "", "", 0, changed=False)
    assert [carol.expect(ev.Error).code for _ in range(2)] == [ErrorCode.NO_SUCH_ROOM] * 2


def test_an_empty_room_is_gone_with_its_topic(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob = registered(clients, server.address, "alice", "bob")
    alice.join("#tmp")
    bob.join("#tmp")
    alice.expect(ev.Joined)
    alice.send(ev.SetTopic("#tmp", "short-lived"))
    assert alice.expect(ev.Topic).text == "short-lived"
    assert bob.expect(ev.Topic).text == "short-lived"
    bob.send(ev.Part("#tmp", ""))
    assert bob.expect(ev.Parted) == ev.Parted("#tmp", "bob", "")
    alice.send(ev.ListRooms())  # one member left: the room and its topic stay
    assert alice.expect(ev.Parted) == ev.Parted("#tmp", "bob", "")
    assert alice.expect(ev.RoomList) == ev.RoomList(
        (ev.RoomInfo(LOBBY, 2, ""), ev.RoomInfo("#tmp", 1, "short-lived")), more=False
    )
    alice.send(ev.Part("#tmp", "done"), ev.ListRooms())
    assert alice.expect(ev.Parted) == ev.Parted("#tmp", "alice", "done")
    assert alice.expect(ev.RoomList) == ev.RoomList((ev.RoomInfo(LOBBY, 2, ""),), more=False)
    # Made again, it is a new room: no topic to brief the joiner with.
    bob.send(ev.Join("#tmp"), ev.GetTopic("#tmp"))
    assert bob.expect(ev.Joined) == ev.Joined("#tmp", "bob")
    assert bob.briefed("#tmp").topic is None
    assert bob.expect(ev.Event) == ev.Topic("#tmp", "", "", 0, changed=False)


def test_rooms_per_member_limit(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server(rooms_per_member=2)
    (alice,) = registered(clients, server.address, "alice")
    alice.join("#a")  # with the lobby: two rooms, the most
    alice.send(ev.Join("#b"))
    assert alice.expect(ev.Error).code is ErrorCode.TOO_MANY_ROOMS
    alice.send(ev.ListRooms())
    assert alice.expect(ev.RoomList) == ev.RoomList((ev.RoomInfo("#a", 1, ""), ev.RoomInfo(LOBBY, 1, "")), False)
    alice.send(ev.Part("#a", ""))
    alice.expect(ev.Parted)
    assert alice.join("#b") == ev.Joined("#b", "alice")


def test_max_rooms_limit(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server(max_rooms=2)
    alice, bob = registered(clients, server.address, "alice", "bob")
    alice.join("#a")  # with the lobby: two rooms, the server's most
    bob.send(ev.Join("#b"))
    assert bob.expect(ev.Error).code is ErrorCode.TOO_MANY_ROOMS
    assert bob.join("#a") == ev.Joined("#a", "bob")  # an existing room is never refused
    assert alice.expect(ev.Joined) == ev.Joined("#a", "bob")
    alice.send(ev.Part("#a", ""))
    assert alice.expect(ev.Parted) == ev.Parted("#a", "alice", "")
    assert bob.expect(ev.Parted) == ev.Parted("#a", "alice", "")
    bob.send(ev.Part("#a", ""))
    assert bob.expect(ev.Parted) == ev.Parted("#a", "bob", "")
    nothing_pending(alice)  # no longer in #a: bob's part is not hers to hear
    assert bob.join("#b") == ev.Joined("#b", "bob")  # #a is gone: there is room for #b


def room_field(room: bytes) -> bytes:
    return struct.pack(">B", len(room)) + room


@pytest.mark.parametrize(
    "room",
    [
        b"lobby",  # no #
        b"#",  # nothing after it
        b"#2026",  # starts with a digit, as a nick may not
        b"#-x",
        b"#has space",
        b"#a.b",
        b"#" + b"x" * 33,  # one past the longest
        "#Кухня🙂".encode(),  # an emoji is no nick character
    ],
)
def test_bad_room_names_are_refused(make_server: MakeServer, clients: MakeClient, room: bytes) -> None:
    server = make_server()
    alice, bob = registered(clients, server.address, "alice", "bob")
    payload = room_field(room) + room_field(b"") + struct.pack(">Q", 0)  # no resume position (epoch, after)
    alice.send_raw(HEADER.pack(MAGIC, VERSION, FrameType.JOIN, len(payload)) + payload)
    assert alice.expect(ev.Error).code is ErrorCode.BAD_ROOM
    alice.send(ev.ListRooms())  # nothing was made, and the connection goes on
    assert alice.expect(ev.RoomList) == ev.RoomList((ev.RoomInfo(LOBBY, 2, ""),), more=False)
    nothing_pending(bob)


def test_one_room_under_two_spellings(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob = registered(clients, server.address, "alice", "bob")
    assert alice.join("#Кухня") == ev.Joined("#Кухня", "alice")
    assert bob.join("#кухня") == ev.Joined("#Кухня", "bob")  # shown as first spelled
    assert alice.expect(ev.Joined) == ev.Joined("#Кухня", "bob")
    bob.send(ev.Say("#КУХНЯ", "борщ"))
    assert bare(alice.expect(ev.Message)) == ev.Message("#Кухня", "bob", "борщ")
    assert bare(bob.expect(ev.Message)) == ev.Message("#Кухня", "bob", "борщ")  # as the room spells itself


# --- people at nc --------------------------------------------------------------------


def test_a_person_at_nc_joins_talks_and_parts(
    make_server: MakeServer, clients: MakeClient, line_clients: MakeLine
) -> None:
    server = make_server()
    (alice,) = registered(clients, server.address, "alice")
    nc = line_clients(server.address)
    join_line(nc, "bob")
    assert alice.expect(ev.Joined) == ev.Joined(LOBBY, "bob")
    nc.send(b"/join #dev\nalone in here\n/names\n")
    assert nc.line() == "*** bob joined #dev"
    assert nc.line() == "* in #dev: bob"  # and so the line before it was handled too
    nothing_pending(alice)  # nothing of #dev reached alice, who is not in it
    alice.join("#dev")  # and she is shown what was said there before
    assert alice.briefing is not None
    assert [bare(m) for m in alice.briefing.history] == [ev.Message("#dev", "bob", "alone in here", history=True)]
    assert nc.line() == "*** alice joined #dev"
    nc.send(b"hi alice\n/me waves\n")  # the current room is #dev now
    assert bare(alice.expect(ev.Message)) == ev.Message("#dev", "bob", "hi alice")
    assert bare(alice.expect(ev.Action)) == ev.Action("#dev", "bob", "waves")
    alice.send(ev.Say("#dev", "hi bob"), ev.Say(LOBBY, "over here"), ev.Act(LOBBY, "points"))
    assert nc.line() == "alice: hi bob"
    assert nc.line() == "[#lobby] alice: over here"  # not bob's current room: marked
    assert nc.line() == "[#lobby] * alice points"
    echoes = [bare(alice.expect(ev.Message)), bare(alice.expect(ev.Message)), bare(alice.expect(ev.Action))]
    assert echoes == [
        ev.Message("#dev", "alice", "hi bob"),
        ev.Message(LOBBY, "alice", "over here"),
        ev.Action(LOBBY, "alice", "points"),
    ]
    # /join of a room one is in switches to it, without a word to the server.
    nc.send(b"/join #lobby\nback in the lobby\n")
    assert nc.line() == "* now talking in #lobby"
    assert bare(alice.expect(ev.Message)) == ev.Message(LOBBY, "bob", "back in the lobby")
    alice.send(ev.Say("#dev", "still here"))
    assert nc.line() == "[#dev] alice: still here"
    assert bare(alice.expect(ev.Message)) == ev.Message("#dev", "alice", "still here")
    nc.send(b"/names #dev\n/names\n")
    assert nc.line() == "* in #dev: bob, alice"
    assert nc.line() == "* in #lobby: alice, bob"
    nc.send(b"/part #dev see you\n/msg #dev too late\n")
    assert nc.line() == "*** bob left #dev (see you)"
    assert nc.line().startswith("* error (not-in-room):")
    assert alice.expect(ev.Parted) == ev.Parted("#dev", "bob", "see you")
    nothing_pending(alice)  # the refused line reached nobody


def test_a_person_at_nc_parts_the_current_room_and_falls_back(
    make_server: MakeServer, clients: MakeClient, line_clients: MakeLine
) -> None:
    server = make_server()
    (alice,) = registered(clients, server.address, "alice")
    nc = line_clients(server.address)
    join_line(nc, "bob")
    nc.send(b"/join #a\n/join #b\n/part\nwhere am I\n")
    assert nc.line() == "*** bob joined #a"
    assert nc.line() == "*** bob joined #b"
    assert nc.line() == "*** bob left #b"
    # The room joined most recently of those left is current: #a, where alice is not.
    alice.send(ev.Names("#a"))
    assert alice.expect(ev.Joined) == ev.Joined(LOBBY, "bob")
    assert alice.expect(ev.WhoReply) == ev.WhoReply("#a", ("bob",), more=False)
    nc.send(b"/part\n/part\nnowhere to say this\n/who\n")
    assert nc.line() == "*** bob left #a"
    assert nc.line() == "*** bob left #lobby"
    assert nc.line().startswith("* error (not-in-room):")
    assert nc.line() == "* online: alice, bob"  # in no room, still online
    assert alice.expect(ev.Parted) == ev.Parted(LOBBY, "bob", "")


def test_text_rooms_and_topics(make_server: MakeServer, clients: MakeClient, line_clients: MakeLine) -> None:
    server = make_server()
    (alice,) = registered(clients, server.address, "alice")
    nc = line_clients(server.address)
    join_line(nc, "bob")
    nc.send(b"/join #dev\n/topic\n/topic ship it\n/topic\n/rooms\n")
    assert nc.line() == "*** bob joined #dev"
    assert nc.line() == "* #dev has no topic"
    assert nc.line() == "*** bob set the topic of #dev: ship it"
    shown = nc.line()
    assert re.fullmatch(r"\* topic of #dev: ship it \(set by bob, \d{4}-\d\d-\d\d \d\d:\d\d UTC\)", shown), shown
    assert nc.line() == "* rooms: #dev (1): ship it; #lobby (2)"
    alice.send(ev.Join("#dev"))
    assert alice.expect(ev.Joined) == ev.Joined(LOBBY, "bob")
    assert alice.expect(ev.Joined) == ev.Joined("#dev", "alice")
    briefing = alice.expect(ev.Topic)
    assert (briefing.text, briefing.setter, briefing.changed) == ("ship it", "bob", False)
    assert nc.line() == "*** alice joined #dev"
    alice.send(ev.SetTopic("#dev", "ship it today"))
    assert nc.line() == "*** alice set the topic of #dev: ship it today"


def test_framed_and_text_members_of_one_room_see_each_other(
    make_server: MakeServer, clients: MakeClient, line_clients: MakeLine
) -> None:
    server = make_server()
    (alice,) = registered(clients, server.address, "alice")
    bob_nc, carol_nc = line_clients(server.address), line_clients(server.address)
    join_line(bob_nc, "bob")
    join_line(carol_nc, "carol")
    assert bob_nc.line() == "*** carol joined #lobby"
    assert [alice.expect(ev.Joined) for _ in range(2)] == [ev.Joined(LOBBY, "bob"), ev.Joined(LOBBY, "carol")]
    alice.join("#dev")
    bob_nc.send(b"/join #dev\n")
    assert bob_nc.line() == "*** bob joined #dev"
    # carol joins #dev too, then goes back to the lobby as her current room.
    carol_nc.send(b"/join #dev\n/join #lobby\n")
    assert carol_nc.line() == "*** carol joined #dev"
    assert carol_nc.line() == "* now talking in #lobby"
    assert bob_nc.line() == "*** carol joined #dev"
    bob_nc.send(b"from bob\n")
    alice.send(ev.Say("#dev", "from alice"))
    assert [alice.expect(ev.Joined) for _ in range(2)] == [ev.Joined("#dev", "bob"), ev.Joined("#dev", "carol")]
    assert [bare(alice.expect(ev.Message)) for _ in range(2)] in (  # her own among them, in the room's order
        [ev.Message("#dev", "bob", "from bob"), ev.Message("#dev", "alice", "from alice")],
        [ev.Message("#dev", "alice", "from alice"), ev.Message("#dev", "bob", "from bob")],
    )
    assert bob_nc.line() == "alice: from alice"  # bob's current room; his own line is not sent back
    # carol's current room is the lobby: #dev's lines are marked, in the room's one order.
    assert [carol_nc.line(), carol_nc.line()] in (
        ["[#dev] bob: from bob", "[#dev] alice: from alice"],
        ["[#dev] alice: from alice", "[#dev] bob: from bob"],
    )

"""The chat state, case by case: registration, rooms, routing, refusals, endings."""

from __future__ import annotations

import pytest

from common.chat import events as ev
from common.chat.commands import HELP_LINES
from common.chat.hub import Delivery, Hub
from common.chat.log import MemoryStore
from common.chat.rooms import LOBBY, room_key
from common.ports import Entry
from common.wire.errors import ErrorCode, FrameRejected, RemoteProtocolError, RuleError
from common.wire.limits import ROOMS_CHUNK, WHO_CHUNK

NOW = 1_798_761_600.0  # 2027-01-01 00:00 UTC
#: NOW as messages carry it: Unix milliseconds.
T = int(NOW * 1000)

Seen = tuple[tuple[int, ...], ev.ServerEvent]


def seen(deliveries: list[Delivery[int]]) -> list[Seen]:
    """Who gets what; a Replay's epoch (random) reads as "e"."""
    return [(d.recipients, _plain(d.event)) for d in deliveries]


def _plain(event: ev.ServerEvent) -> ev.ServerEvent:
    return ev.Replay(event.room, "e", event.first, event.last, event.gap) if isinstance(event, ev.Replay) else event


def none_yet(room: str, last: int = 0) -> ev.Replay:
    """The Replay a joiner of ``room`` gets when it has nothing to show (``last`` said before)."""
    return ev.Replay(room, "e", last + 1, last, False)


def said(room: str, sender: str, text: str, seq: int, *, time: int = T, history: bool = False) -> ev.Message:
    return ev.Message(room, sender, text, seq, time, history)


def joined(hub: Hub[int], *nicks: str) -> Hub[int]:
    """Register ``nicks`` as connections 1, 2, ... (all in the lobby)."""
    for conn, nick in enumerate(nicks, start=1):
        hub.connect(conn)
        assert hub.receive(conn, ev.Register(nick), NOW)[0].event == ev.Welcome(nick, conn)
    return hub


def only(deliveries: list[Delivery[int]]) -> Seen:
    assert len(deliveries) == 1, deliveries
    return deliveries[0].recipients, deliveries[0].event


def code(deliveries: list[Delivery[int]]) -> ErrorCode:
    event = only(deliveries)[1]
    assert isinstance(event, ev.Error), event
    return event.code


# --- registration ------------------------------------------------------------------


def test_registration_welcomes_and_joins_the_lobby() -> None:
    hub = joined(Hub(), "alice")
    hub.connect(2)
    out = hub.receive(2, ev.Register("bob"), NOW)
    assert seen(out) == [((2,), ev.Welcome("bob", 2)), ((1, 2), ev.Joined(LOBBY, "bob")), ((2,), none_yet(LOBBY))]
    assert hub.nicks() == ("alice", "bob")
    assert hub.rooms_of(2) == (LOBBY,)


def test_registration_normalises_to_nfc() -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    hub.receive(1, ev.Register("Jose\u0301"), NOW)
    assert hub.nick_of(1) == "José"


def test_a_taken_nick_ends_a_framed_client_but_not_a_line_client() -> None:
    hub = joined(Hub(), "Маша")
    hub.connect(2)
    out = hub.receive(2, ev.Register("маша"), NOW)
    assert [d.event for d in out] == [
        ev.Error(ErrorCode.NICK_TAKEN, "the nick маша is taken"),
        ev.Goodbye("the nick маша is taken"),
    ]
    assert [d.last for d in out] == [False, True]
    assert 2 not in hub
    hub.connect(3, may_retry=True)
    assert code(hub.receive(3, ev.Register("МАША"), NOW)) is ErrorCode.NICK_TAKEN
    assert code(hub.receive(3, ev.Register("1up"), NOW)) is ErrorCode.BAD_NICK
    assert 3 in hub
    assert hub.receive(3, ev.Register("dasha"), NOW)[0].event == ev.Welcome("dasha", 2)


def test_a_nick_refused_by_the_decoder_is_a_refused_registration() -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    out = hub.reject(1, FrameRejected(ErrorCode.BAD_NICK, "a nick has 1 to 32 characters"))
    assert [type(d.event) for d in out] == [ev.Error, ev.Goodbye]
    assert 1 not in hub


# --- rooms ---------------------------------------------------------------------------


def test_messages_go_to_every_member_of_the_room_numbered_and_timed() -> None:
    hub = joined(Hub(), "alice", "bob", "carol")
    # The sender gets its own back (its echo): it shows what the store holds.
    assert only(hub.receive(2, ev.Say(LOBBY, "hi"), NOW)) == ((1, 2, 3), said(LOBBY, "bob", "hi", 1))
    action = ev.Action(LOBBY, "alice", "waves", 2, T + 1000)
    assert only(hub.receive(1, ev.Act(LOBBY, "waves"), NOW + 1)) == ((1, 2, 3), action)


def test_a_person_at_nc_is_not_sent_their_own_line() -> None:
    hub = joined(Hub(), "alice")
    hub.connect(2, may_retry=True, echo=False)
    hub.receive(2, ev.Register("bob"), NOW)
    assert only(hub.receive(2, ev.Say(LOBBY, "hi"), NOW)) == ((1,), said(LOBBY, "bob", "hi", 1))


def test_alone_you_hear_only_yourself_but_it_is_still_said() -> None:
    hub = joined(Hub(), "alice")
    out = hub.receive(1, ev.Say(LOBBY, "anyone?"), NOW)
    assert seen(out) == [((1,), said(LOBBY, "alice", "anyone?", 1))]


def test_join_creates_a_room_and_everyone_in_it_is_told() -> None:
    hub = joined(Hub(), "alice", "bob", "carol")
    assert seen(hub.receive(1, ev.Join("#Dev"), NOW)) == [((1,), ev.Joined("#Dev", "alice")), ((1,), none_yet("#Dev"))]
    # Another spelling of the same room joins it under the name it was made with.
    assert seen(hub.receive(2, ev.Join("#dev"), NOW)) == [((1, 2), ev.Joined("#Dev", "bob")), ((2,), none_yet("#Dev"))]
    assert only(hub.receive(2, ev.Say("#DEV", "psst"), NOW)) == ((1, 2), said("#Dev", "bob", "psst", 1))
    assert hub.rooms_of(2) == (LOBBY, "#Dev")
    assert hub.room_members("#dev") == (1, 2)


def test_unicode_room_names_fold_like_nicks() -> None:
    hub = joined(Hub(), "alice", "bob")
    hub.receive(1, ev.Join("#Кухня"), NOW)
    assert seen(hub.receive(2, ev.Join("#кухня"), NOW))[0] == ((1, 2), ev.Joined("#Кухня", "bob"))


def test_joining_a_room_you_are_in_changes_nothing() -> None:
    hub = joined(Hub(), "alice")
    hub.receive(1, ev.Join("#dev"), NOW)
    assert only(hub.receive(1, ev.Join("#DEV"), NOW)) == ((1,), ev.Reply("you are in #dev already"))
    assert hub.rooms_of(1) == (LOBBY, "#dev")


@pytest.mark.parametrize("name", ["#a b", "#1up", "#-x", "#a\u200bb", "#a!"])
def test_bad_room_names_are_refused(name: str) -> None:
    hub = joined(Hub(), "alice")
    assert code(hub.receive(1, ev.Join(name), NOW)) is ErrorCode.BAD_ROOM
    assert hub.rooms_of(1) == (LOBBY,)


@pytest.mark.parametrize("name", ["", "#", "lobby", "#" + "x" * 33, "#a\nb"])
def test_a_room_field_of_the_wrong_shape_cannot_be_built(name: str) -> None:
    with pytest.raises(RuleError) as caught:
        ev.Join(name)
    assert caught.value.code is ErrorCode.BAD_ROOM


def test_saying_in_a_room_you_are_not_in_is_refused() -> None:
    hub = joined(Hub(), "alice", "bob")
    hub.receive(2, ev.Join("#dev"), NOW)
    assert code(hub.receive(1, ev.Say("#dev", "let me in"), NOW)) is ErrorCode.NOT_IN_ROOM
    assert code(hub.receive(1, ev.Act("#nowhere", "waves"), NOW)) is ErrorCode.NOT_IN_ROOM
    assert code(hub.receive(1, ev.Part("#dev", ""), NOW)) is ErrorCode.NOT_IN_ROOM
    assert code(hub.receive(1, ev.SetTopic("#dev", "mine"), NOW)) is ErrorCode.NOT_IN_ROOM


def test_part_tells_the_room_and_an_empty_room_is_gone_with_its_topic() -> None:
    hub = joined(Hub(), "alice", "bob")
    hub.receive(1, ev.Join("#dev"), NOW)
    hub.receive(2, ev.Join("#dev"), NOW)
    hub.receive(1, ev.SetTopic("#dev", "ship it"), NOW)
    assert seen(hub.receive(1, ev.Part("#dev", "lunch"), NOW)) == [((1, 2), ev.Parted("#dev", "alice", "lunch"))]
    assert only(hub.receive(2, ev.Say("#dev", "alone"), NOW))[0] == (2,)
    hub.receive(2, ev.Part("#dev", ""), NOW)
    assert "#dev" not in hub.room_names()
    hub.receive(1, ev.Join("#dev"), NOW)
    assert seen(hub.receive(1, ev.GetTopic("#dev"), NOW)) == [((1,), ev.Topic("#dev", "", "", 0, False))]


def test_leaving_every_room_keeps_you_online() -> None:
    hub = joined(Hub(), "alice", "bob")
    hub.receive(1, ev.Part(LOBBY, ""), NOW)
    assert hub.rooms_of(1) == ()
    assert hub.nicks() == ("alice", "bob")
    assert only(hub.receive(2, ev.Say(LOBBY, "hi"), NOW))[0] == (2,)
    assert only(hub.receive(2, ev.Whisper("alice", "still there?"), NOW))[0] == (1,)


def test_topics_say_who_set_them_and_when() -> None:
    hub = joined(Hub(), "alice", "bob")
    assert seen(hub.receive(1, ev.GetTopic(LOBBY), NOW)) == [((1,), ev.Topic(LOBBY, "", "", 0, False))]
    changed = ev.Topic(LOBBY, "welcome all", "alice", int(NOW), True)
    assert seen(hub.receive(1, ev.SetTopic(LOBBY, "welcome all"), NOW)) == [((1, 2), changed)]
    later = NOW + 60
    assert seen(hub.receive(2, ev.GetTopic("#LOBBY"), later)) == [
        ((2,), ev.Topic(LOBBY, "welcome all", "alice", int(NOW), False))
    ]
    # A newcomer is told the topic as it joins.
    hub.connect(3)
    out = hub.receive(3, ev.Register("carol"), later)
    assert seen(out)[-2:] == [((3,), ev.Topic(LOBBY, "welcome all", "alice", int(NOW), False)), ((3,), none_yet(LOBBY))]
    assert code(hub.receive(1, ev.GetTopic("#nowhere"), NOW)) is ErrorCode.NO_SUCH_ROOM


def test_names_list_a_room_and_who_lists_everyone() -> None:
    hub = joined(Hub(), "alice", "bob", "carol")
    hub.receive(3, ev.Join("#dev"), NOW)
    hub.receive(1, ev.Join("#dev"), NOW)
    assert seen(hub.receive(2, ev.Names("#dev"), NOW)) == [((2,), ev.WhoReply("#dev", ("carol", "alice"), False))]
    assert seen(hub.receive(2, ev.Who(), NOW)) == [((2,), ev.WhoReply("", ("alice", "bob", "carol"), False))]
    assert code(hub.receive(2, ev.Names("#nowhere"), NOW)) is ErrorCode.NO_SUCH_ROOM


def test_rooms_list_by_name_with_counts_and_topics_in_bounded_chunks() -> None:
    hub = joined(Hub(rooms_per_member=ROOMS_CHUNK + 5), "alice", "bob")
    for i in range(ROOMS_CHUNK + 1):
        hub.receive(1, ev.Join(f"#r{i:03d}"), NOW)
    hub.receive(2, ev.Join("#r000"), NOW)
    hub.receive(2, ev.SetTopic("#r000", "first"), NOW)
    lists = [event for _, event in seen(hub.receive(2, ev.ListRooms(), NOW))]
    assert [isinstance(e, ev.RoomList) and e.more for e in lists] == [True, False]
    rows = [row for e in lists for row in e.rooms]  # type: ignore[attr-defined]
    assert rows[0] == ev.RoomInfo("#lobby", 2, "")
    assert rows[1] == ev.RoomInfo("#r000", 2, "first")
    assert [r.room for r in rows] == sorted(r.room for r in rows)
    assert len(rows) == ROOMS_CHUNK + 2


def test_room_limits_per_member_and_per_server() -> None:
    hub = joined(Hub(rooms_per_member=2, max_rooms=3), "alice", "bob", "carol")
    hub.receive(1, ev.Join("#a"), NOW)
    refused = only(hub.receive(1, ev.Join("#b"), NOW))[1]
    assert isinstance(refused, ev.Error) and refused.code is ErrorCode.TOO_MANY_ROOMS and "/part" in refused.detail
    hub.receive(2, ev.Join("#b"), NOW)  # lobby, #a, #b: the server is full of rooms
    hub.receive(1, ev.Part("#a", ""), NOW)  # #a is gone with its last member
    hub.receive(1, ev.Join("#c"), NOW)
    assert hub.rooms_of(1) == (LOBBY, "#c")
    refused = only(hub.receive(3, ev.Join("#d"), NOW))[1]
    assert isinstance(refused, ev.Error) and refused.code is ErrorCode.TOO_MANY_ROOMS and "server" in refused.detail
    assert hub.room_names() == (LOBBY, "#b", "#c")
    hub.receive(2, ev.Part("#b", ""), NOW)
    hub.receive(2, ev.Join("#c"), NOW)  # an existing room is joinable whatever the count
    assert hub.rooms_of(2) == (LOBBY, "#c")


def test_messages_are_numbered_per_room_and_stored_before_delivery() -> None:
    store = MemoryStore()
    hub = joined(Hub(store=store), "alice", "bob")
    hub.receive(1, ev.Join("#dev"), NOW)
    out = hub.receive(1, ev.Say("#dev", "one"), NOW) + hub.receive(2, ev.Say(LOBBY, "x"), NOW)
    out += hub.receive(1, ev.Act("#dev", "two"), NOW + 1)
    messages = [d.event for d in out]
    assert [(m.room, m.seq) for m in messages] == [("#dev", 1), (LOBBY, 1), ("#dev", 2)]  # type: ignore[attr-defined]
    # Joins, parts and topics are not numbered: history is what people said.
    assert store.after(room_key("#dev"), 0, 10) == [
        Entry(1, T, "alice", "one", False),
        Entry(2, T + 1000, "alice", "two", True),
    ]


# --- private messages, nicks, queries ------------------------------------------------


def test_private_messages_reach_one_member() -> None:
    hub = joined(Hub(), "alice", "bob", "carol")
    assert only(hub.receive(1, ev.Whisper("CAROL", "psst"), NOW)) == ((3,), ev.Private("alice", "psst", T))
    recipients, error = only(hub.receive(1, ev.Whisper("dave", "psst"), NOW))
    assert recipients == (1,)
    assert error == ev.Error(ErrorCode.NO_SUCH_NICK, "nobody is called dave")


def test_nick_changes_are_told_to_whoever_shares_a_room() -> None:
    hub = joined(Hub(), "alice", "bob", "carol")
    hub.receive(3, ev.Part(LOBBY, ""), NOW)
    assert only(hub.receive(1, ev.ChangeNick("Alice"), NOW)) == ((1, 2), ev.Renamed("alice", "Alice"))
    assert code(hub.receive(1, ev.ChangeNick("BOB"), NOW)) is ErrorCode.NICK_TAKEN
    assert code(hub.receive(1, ev.ChangeNick("9lives"), NOW)) is ErrorCode.BAD_NICK
    assert only(hub.receive(1, ev.ChangeNick("Alice"), NOW))[1] == ev.Reply("you are Alice already")
    hub.receive(1, ev.ChangeNick("alicia"), NOW)
    hub.connect(4)
    assert hub.receive(4, ev.Register("alice"), NOW)[0].event == ev.Welcome("alice", 4)  # the old nick is free
    assert only(hub.receive(2, ev.Whisper("alicia", "found you"), NOW))[0] == (1,)
    assert only(hub.receive(3, ev.ChangeNick("caroline"), NOW))[0] == (3,)  # in no room: only told itself


def test_who_lists_members_in_join_order_in_bounded_chunks() -> None:
    names = [f"user{i}" for i in range(WHO_CHUNK + 3)]
    hub = joined(Hub(), *names)
    out = hub.receive(1, ev.Who(), NOW)
    assert all(d.recipients == (1,) for d in out)
    replies = [d.event for d in out]
    assert [r.more for r in replies] == [True, False]  # type: ignore[attr-defined]
    assert [n for r in replies for n in r.nicks] == names  # type: ignore[attr-defined]


def test_help_and_ping() -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    assert [d.event for d in hub.receive(1, ev.Help(), NOW)] == [ev.Reply(line) for line in HELP_LINES]
    assert only(hub.receive(1, ev.Ping(42), NOW)) == ((1,), ev.Pong(42))
    assert hub.receive(1, ev.Pong(42), NOW) == []


@pytest.mark.parametrize(
    "event", [ev.Say(LOBBY, "too early"), ev.Who(), ev.Join("#dev"), ev.ListRooms(), ev.SetTopic(LOBBY, "x")]
)
def test_what_a_pending_client_may_not_say(event: ev.ClientEvent) -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    assert code(hub.receive(1, event, NOW)) is ErrorCode.NOT_REGISTERED
    assert 1 in hub


@pytest.mark.parametrize("event", [ev.Message(LOBBY, "alice", "forged"), ev.Joined(LOBBY, "mallory"), ev.Ack(0, ())])
def test_events_a_client_may_not_send_are_refused(event: ev.Event) -> None:
    hub = joined(Hub(), "alice", "bob")
    hub.connect(3)
    for conn in (1, 3):
        assert code(hub.take(conn, [event], NOW)) is ErrorCode.UNEXPECTED_FRAME
    assert 3 in hub


def test_a_member_cannot_register_twice() -> None:
    hub = joined(Hub(), "alice", "bob")
    assert code(hub.receive(1, ev.Register("carol"), NOW)) is ErrorCode.ALREADY_REGISTERED


def test_take_handles_events_and_errors_in_order() -> None:
    hub = joined(Hub(), "alice", "bob")
    items = [ev.Say(LOBBY, "one"), FrameRejected(ErrorCode.BAD_UTF8, "not UTF-8"), ev.Say(LOBBY, "two")]
    assert seen(hub.take(1, items, NOW)) == [
        ((1, 2), said(LOBBY, "alice", "one", 1)),
        ((1,), ev.Error(ErrorCode.BAD_UTF8, "not UTF-8")),
        ((1, 2), said(LOBBY, "alice", "two", 2)),
    ]


# --- endings -------------------------------------------------------------------------


def test_quitting_says_goodbye_and_tells_whoever_shares_a_room() -> None:
    hub = joined(Hub(), "alice", "bob", "carol")
    hub.receive(3, ev.Part(LOBBY, ""), NOW)
    hub.receive(1, ev.Join("#dev"), NOW)
    out = hub.receive(1, ev.Goodbye("lunch"), NOW)
    assert [(d.recipients, d.event, d.last) for d in out] == [
        ((1,), ev.Goodbye("bye"), True),
        ((2,), ev.Left("alice", "lunch"), False),
    ]
    assert hub.nicks() == ("bob", "carol")
    assert "#dev" not in hub.room_names()
    assert hub.receive(1, ev.Say(LOBBY, "ghost"), NOW) == []  # a late event from a gone client changes nothing


def test_recoverable_and_fatal_decode_errors() -> None:
    hub = joined(Hub(), "alice", "bob")
    out = hub.reject(1, FrameRejected(ErrorCode.BAD_UTF8, "not UTF-8"))
    assert seen(out) == [((1,), ev.Error(ErrorCode.BAD_UTF8, "not UTF-8"))]
    out = hub.reject(1, RemoteProtocolError(ErrorCode.BAD_MAGIC, "garbage"))
    assert [d.event for d in out] == [
        ev.Error(ErrorCode.BAD_MAGIC, "garbage"),
        ev.Goodbye("garbage"),
        ev.Left("alice", "garbage"),
    ]
    assert out[-1].recipients == (2,)


def test_error_details_from_peers_are_scrubbed() -> None:
    hub = joined(Hub(), "alice")
    out = hub.reject(1, RuleError(ErrorCode.UNKNOWN_COMMAND, "unknown command /\x1b[2J"))
    assert out[0].event == ev.Error(ErrorCode.UNKNOWN_COMMAND, "unknown command /\ufffd[2J")


def test_kick_disconnect_and_shutdown() -> None:
    hub = joined(Hub(), "alice", "bob", "carol")
    out = hub.kick(2, ErrorCode.SLOW_CONSUMER, "too slow")
    assert [(d.recipients, d.event, d.last) for d in out] == [
        ((2,), ev.Error(ErrorCode.SLOW_CONSUMER, "too slow"), False),
        ((2,), ev.Goodbye("too slow"), True),
        ((1, 3), ev.Left("bob", "too slow"), False),
    ]
    assert hub.kick(2, ErrorCode.SLOW_CONSUMER, "again") == []
    assert seen(hub.disconnect(3, "connection reset")) == [((1,), ev.Left("carol", "connection reset"))]
    hub.connect(9)
    out = hub.shutdown("server shutting down")
    assert [d.recipients for d in out] == [(1, 9), (1, 9)]
    assert [(type(d.event), d.last) for d in out] == [(ev.Error, False), (ev.Goodbye, True)]
    assert len(hub) == 0
    assert hub.room_names() == ()


def test_max_clients_counts_members_only() -> None:
    # Unregistered connections do not count: they cannot lock members out.
    hub: Hub[int] = Hub(max_clients=2)
    for conn in (1, 2, 3, 4):
        assert hub.connect(conn) == []
    hub.receive(1, ev.Register("a"), NOW)
    hub.receive(2, ev.Register("b"), NOW)
    out = hub.receive(3, ev.Register("c"), NOW)
    assert out[0].event.code is ErrorCode.SERVER_FULL  # type: ignore[union-attr]
    assert isinstance(out[-1].event, ev.Goodbye) and out[-1].last
    assert 3 not in hub
    out = hub.connect(5)
    assert out[0].event.code is ErrorCode.SERVER_FULL  # type: ignore[union-attr]
    hub.disconnect(1, "")
    assert hub.connect(5) == []
    assert hub.receive(4, ev.Register("d"), NOW)[0].event == ev.Welcome("d", 2)


def test_connecting_twice_is_a_bug() -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    with pytest.raises(ValueError, match="connected already"):
        hub.connect(1)


def test_a_big_room_does_not_announce_comings_and_goings() -> None:
    hub = joined(Hub(announce_limit=3), "alice", "bob", "carol")
    hub.connect(4)
    out = hub.receive(4, ev.Register("dave"), NOW)  # the lobby now has 4 > 3
    assert [d.recipients for d in out if isinstance(d.event, ev.Joined)] == [(4,)]  # to dave alone
    assert [d.recipients for d in hub.receive(4, ev.Part(LOBBY, ""), NOW)] == [(4,)]
    hub.receive(4, ev.Join(LOBBY), NOW)
    assert hub.receive(4, ev.Goodbye(""), NOW)[1:] == []  # nobody is told dave left
    # At the limit, everyone is told again.
    assert seen(hub.receive(3, ev.Part(LOBBY, ""), NOW)) == [((1, 2, 3), ev.Parted(LOBBY, "carol", ""))]
    # Messages and names are not affected.
    assert only(hub.receive(1, ev.Say(LOBBY, "hi"), NOW))[0] == (1, 2)

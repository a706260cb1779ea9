"""The chat state, case by case: registration, routing, refusals, endings."""

from __future__ import annotations

import pytest

from common.chat import events as ev
from common.chat.commands import HELP_LINES
from common.chat.hub import Delivery, Hub
from common.wire.errors import ErrorCode, FrameRejected, RemoteProtocolError, RuleError
from common.wire.limits import WHO_CHUNK


def joined(hub: Hub[int], *nicks: str) -> Hub[int]:
    for conn, nick in enumerate(nicks, start=1):
        hub.connect(conn)
        assert hub.receive(conn, ev.Register(nick))[0].event == ev.Welcome(nick, conn)
    return hub


def only(deliveries: list[Delivery[int]]) -> tuple[tuple[int, ...], ev.ServerEvent]:
    assert len(deliveries) == 1, deliveries
    return deliveries[0].recipients, deliveries[0].event


def test_registration_welcomes_and_announces() -> None:
    hub = joined(Hub(), "alice")
    hub.connect(2)
    out = hub.receive(2, ev.Register("bob"))
    assert out == [Delivery((2,), ev.Welcome("bob", 2)), Delivery((1,), ev.Joined("bob"))]
    assert hub.nicks() == ("alice", "bob")


def test_registration_normalises_to_nfc() -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    hub.receive(1, ev.Register("Jose\u0301"))
    assert hub.nick_of(1) == "José"


def test_a_taken_nick_ends_a_framed_client_but_not_a_line_client() -> None:
    hub = joined(Hub(), "Маша")
    hub.connect(2)
    out = hub.receive(2, ev.Register("маша"))
    assert [d.event for d in out] == [
        ev.Error(ErrorCode.NICK_TAKEN, "the nick маша is taken"),
        ev.Goodbye("the nick маша is taken"),
    ]
    assert 2 not in hub
    hub.connect(3, may_retry=True)
    assert only(hub.receive(3, ev.Register("МАША")))[1].code is ErrorCode.NICK_TAKEN  # type: ignore[union-attr]
    assert only(hub.receive(3, ev.Register("1up")))[1].code is ErrorCode.BAD_NICK  # type: ignore[union-attr]
    assert 3 in hub
    assert hub.receive(3, ev.Register("dasha"))[0].event == ev.Welcome("dasha", 2)


def test_a_nick_refused_by_the_decoder_is_a_refused_registration() -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    out = hub.reject(1, FrameRejected(ErrorCode.BAD_NICK, "a nick has 1 to 32 characters"))
    assert [type(d.event) for d in out] == [ev.Error, ev.Goodbye]
    assert 1 not in hub


def test_messages_go_to_everyone_but_the_sender() -> None:
    hub = joined(Hub(), "alice", "bob", "carol")
    assert only(hub.receive(2, ev.Say("hi"))) == ((1, 3), ev.Message("bob", "hi"))
    assert only(hub.receive(1, ev.Act("waves"))) == ((2, 3), ev.Action("alice", "waves"))


def test_alone_nobody_hears_you() -> None:
    hub = joined(Hub(), "alice")
    assert hub.receive(1, ev.Say("anyone?")) == []


def test_private_messages_reach_one_member() -> None:
    hub = joined(Hub(), "alice", "bob", "carol")
    assert only(hub.receive(1, ev.Whisper("CAROL", "psst"))) == ((3,), ev.Private("alice", "psst"))
    recipients, error = only(hub.receive(1, ev.Whisper("dave", "psst")))
    assert recipients == (1,)
    assert error == ev.Error(ErrorCode.NO_SUCH_NICK, "nobody is called dave")


def test_nick_changes() -> None:
    hub = joined(Hub(), "alice", "bob")
    assert only(hub.receive(1, ev.ChangeNick("Alice"))) == ((1, 2), ev.Renamed("alice", "Alice"))
    assert only(hub.receive(1, ev.ChangeNick("BOB")))[1].code is ErrorCode.NICK_TAKEN  # type: ignore[union-attr]
    assert only(hub.receive(1, ev.ChangeNick("9lives")))[1].code is ErrorCode.BAD_NICK  # type: ignore[union-attr]
    assert only(hub.receive(1, ev.ChangeNick("Alice")))[1] == ev.Reply("you are Alice already")
    hub.receive(1, ev.ChangeNick("alicia"))
    hub.connect(3)
    assert hub.receive(3, ev.Register("alice"))[0].event == ev.Welcome("alice", 3)  # the old nick is free
    assert only(hub.receive(2, ev.Whisper("alicia", "found you")))[0] == (1,)


def test_who_lists_members_in_join_order_in_bounded_chunks() -> None:
    names = [f"user{i}" for i in range(WHO_CHUNK + 3)]
    hub = joined(Hub(), *names)
    out = hub.receive(1, ev.Who())
    assert all(d.recipients == (1,) for d in out)
    replies = [d.event for d in out]
    assert [r.more for r in replies] == [True, False]  # type: ignore[attr-defined]
    assert [n for r in replies for n in r.nicks] == names  # type: ignore[attr-defined]


def test_help_and_ping() -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    assert [d.event for d in hub.receive(1, ev.Help())] == [ev.Reply(line) for line in HELP_LINES]
    assert only(hub.receive(1, ev.Ping(42))) == ((1,), ev.Pong(42))
    assert hub.receive(1, ev.Pong(42)) == []


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (ev.Say("too early"), ErrorCode.NOT_REGISTERED),
        (ev.Who(), ErrorCode.NOT_REGISTERED),
        (ev.Message("alice", "forged"), ErrorCode.UNEXPECTED_FRAME),
        (ev.Ack(0, ()), ErrorCode.UNEXPECTED_FRAME),
    ],
)
def test_what_a_pending_client_may_not_say(event: ev.Event, code: ErrorCode) -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    assert only(hub.receive(1, event))[1].code is code  # type: ignore[union-attr]
    assert 1 in hub


def test_a_member_cannot_register_twice_or_forge_server_events() -> None:
    hub = joined(Hub(), "alice", "bob")
    assert only(hub.receive(1, ev.Register("carol")))[1].code is ErrorCode.ALREADY_REGISTERED  # type: ignore[union-attr]
    assert only(hub.receive(1, ev.Joined("mallory")))[1].code is ErrorCode.UNEXPECTED_FRAME  # type: ignore[union-attr]


def test_quitting_says_goodbye_and_tells_the_others() -> None:
    hub = joined(Hub(), "alice", "bob")
    out = hub.receive(1, ev.Goodbye("lunch"))
    assert out == [Delivery((1,), ev.Goodbye("bye")), Delivery((2,), ev.Left("alice", "lunch"))]
    assert hub.nicks() == ("bob",)
    assert hub.receive(1, ev.Say("ghost")) == []  # a late event from a gone client changes nothing


def test_recoverable_and_fatal_decode_errors() -> None:
    hub = joined(Hub(), "alice", "bob")
    out = hub.reject(1, FrameRejected(ErrorCode.BAD_UTF8, "not UTF-8"))
    assert out == [Delivery((1,), ev.Error(ErrorCode.BAD_UTF8, "not UTF-8"))]
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
    assert [(d.recipients, d.event) for d in out] == [
        ((2,), ev.Error(ErrorCode.SLOW_CONSUMER, "too slow")),
        ((2,), ev.Goodbye("too slow")),
        ((1, 3), ev.Left("bob", "too slow")),
    ]
    assert hub.kick(2, ErrorCode.SLOW_CONSUMER, "again") == []
    assert hub.disconnect(3, "connection reset") == [Delivery((1,), ev.Left("carol", "connection reset"))]
    hub.connect(9)
    out = hub.shutdown("server shutting down")
    assert [d.recipients for d in out] == [(1, 9), (1, 9)]
    assert [type(d.event) for d in out] == [ev.Error, ev.Goodbye]
    assert len(hub) == 0


def test_max_clients_counts_pending_connections_too() -> None:
    hub: Hub[int] = Hub(max_clients=2)
    hub.connect(1)
    hub.connect(2)
    out = hub.connect(3)
    assert out[0].event.code is ErrorCode.SERVER_FULL  # type: ignore[union-attr]
    assert isinstance(out[-1].event, ev.Goodbye)
    assert 3 not in hub
    hub.disconnect(1, "")
    assert hub.connect(3) == []


def test_connecting_twice_is_a_bug() -> None:
    hub: Hub[int] = Hub()
    hub.connect(1)
    with pytest.raises(ValueError, match="connected already"):
        hub.connect(1)

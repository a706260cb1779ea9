"""Events as the lines plain-text users see."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.chat import events as ev
from common.chat.render import clock, hour, render
from common.wire.errors import ErrorCode
from tests.strategies import EVENTS, any_event, rooms

HERE = "#lobby"


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (ev.Message(HERE, "alice", "hi"), "alice: hi"),
        (ev.Message(HERE, "Маша", "привет 👋"), "Маша: привет 👋"),
        (ev.Message("#dev", "alice", "hi"), "[#dev] alice: hi"),
        (ev.Action(HERE, "alice", "waves"), "* alice waves"),
        (ev.Action("#dev", "alice", "waves"), "[#dev] * alice waves"),
        (ev.Private("alice", "psst"), "*alice* psst"),
        (ev.Joined(HERE, "bob"), "*** bob joined #lobby"),
        (ev.Joined("#dev", "bob"), "*** bob joined #dev"),
        (ev.Parted("#dev", "bob", ""), "*** bob left #dev"),
        (ev.Parted("#dev", "bob", "lunch"), "*** bob left #dev (lunch)"),
        (ev.Topic("#dev", "ship it", "bob", 1798761600, True), "*** bob set the topic of #dev: ship it"),
        (ev.Topic("#dev", "", "bob", 1798761600, True), "*** bob cleared the topic of #dev"),
        (
            ev.Topic("#dev", "ship it", "bob", 1798761600, False),
            "* topic of #dev: ship it (set by bob, 2027-01-01 00:00 UTC)",
        ),
        (ev.Topic("#dev", "", "", 0, False), "* #dev has no topic"),
        (ev.RoomList((), False), "* no rooms"),
        (
            ev.RoomList((ev.RoomInfo("#dev", 2, "ship it"), ev.RoomInfo("#lobby", 5, "")), True),
            "* rooms: #dev (2): ship it; #lobby (5) ...",
        ),
        (ev.WhoReply("#dev", ("alice", "bob"), False), "* in #dev: alice, bob"),
        (ev.Left("bob", ""), "*** bob left"),
        (ev.Left("bob", "lunch"), "*** bob left (lunch)"),
        (ev.Renamed("alice", "alicia"), "*** alice is now known as alicia"),
        (ev.Welcome("bob", 1), "*** welcome, bob: nobody else is here"),
        (ev.Welcome("bob", 2), "*** welcome, bob: 1 other online"),
        (ev.Welcome("bob", 4), "*** welcome, bob: 3 others online"),
        (ev.WhoReply("", ("alice", "bob"), False), "* online: alice, bob"),
        (ev.WhoReply("", ("alice",), True), "* online: alice ..."),
        (ev.Reply("/who  list who is online"), "* /who  list who is online"),
        (ev.Error(ErrorCode.NICK_TAKEN, "the nick bob is taken"), "* error (nick-taken): the nick bob is taken"),
        (ev.Goodbye("server shutting down"), "*** disconnected: server shutting down"),
    ],
)
def test_rendering(event: ev.Event, line: str) -> None:
    assert render(event, HERE) == line


@given(any_event, st.one_of(st.none(), rooms))
def test_one_event_one_line_and_only_messages_lack_the_star(event: ev.Event, here: str | None) -> None:
    line = render(event, here)
    if not isinstance(event, ev.ServerEvent) or isinstance(event, ev.Ping | ev.Pong):
        assert line is None
        return
    if isinstance(event, ev.Replay) and not event.gap:
        assert line is None  # a history's frame shows nothing but its messages
        return
    assert line is not None
    assert "\n" not in line and "\r" not in line
    elsewhere = isinstance(event, ev.Message | ev.Action) and event.room != here
    if elsewhere:
        assert line.startswith(f"[{event.room}] ")
        line = line[len(event.room) + 3 :]
    earlier = (
        event.kept if isinstance(event, ev.Private) else isinstance(event, ev.Message | ev.Action) and event.history
    )
    if earlier:
        assert line.startswith(f"[{hour(event.time)}] ")  # said earlier: when
        line = line[len("[00:00] ") :]
    if isinstance(event, ev.Message):
        assert line == f"{event.sender}: {event.text}"
    else:
        assert line.startswith("*")


@given(st.integers(0, 253_402_300_799))  # to the end of year 9999, as far as datetime goes
def test_clock_matches_the_calendar(unix: int) -> None:
    expected = datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert clock(unix) == expected


SHOWN = sorted(
    (cls for cls in EVENTS if issubclass(cls, ev.ServerEvent) and cls not in {ev.Ping, ev.Pong, ev.Replay}),
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize("cls", SHOWN, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_every_server_event_but_pings_is_rendered(cls: type[ev.Event], data: st.DataObject) -> None:
    assert render(data.draw(EVENTS[cls])) is not None


def test_history_shows_when_it_was_said_and_a_gap_is_said() -> None:
    at = 1_798_765_320_000  # 2027-01-01 01:02 UTC
    assert render(ev.Message("#dev", "alice", "hi", 3, at, True), "#dev") == "[01:02] alice: hi"
    assert render(ev.Action("#dev", "alice", "waves", 4, at, True), "#lobby") == "[#dev] [01:02] * alice waves"
    assert render(ev.Message("#dev", "alice", "hi", 5, at), "#dev") == "alice: hi"  # live: no time
    assert render(ev.Private("bob", "call me", at, True)) == "[01:02] *bob* call me"
    assert render(ev.Replay("#dev", "e", 1, 0, False)) is None
    gap = render(ev.Replay("#dev", "e", 7, 9, True))
    assert gap is not None and gap.startswith("***") and "#dev" in gap and "lost" in gap

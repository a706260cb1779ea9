"""Events as the lines plain-text users see."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.chat import events as ev
from common.chat.render import render
from common.wire.errors import ErrorCode
from tests.strategies import EVENTS, any_event


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (ev.Message("alice", "hi"), "alice: hi"),
        (ev.Message("Маша", "привет 👋"), "Маша: привет 👋"),
        (ev.Action("alice", "waves"), "* alice waves"),
        (ev.Private("alice", "psst"), "*alice* psst"),
        (ev.Joined("bob"), "*** bob joined"),
        (ev.Left("bob", ""), "*** bob left"),
        (ev.Left("bob", "lunch"), "*** bob left (lunch)"),
        (ev.Renamed("alice", "alicia"), "*** alice is now known as alicia"),
        (ev.Welcome("bob", 1), "*** welcome, bob: nobody else is here"),
        (ev.Welcome("bob", 2), "*** welcome, bob: 1 other online"),
        (ev.Welcome("bob", 4), "*** welcome, bob: 3 others online"),
        (ev.WhoReply(("alice", "bob"), False), "* online: alice, bob"),
        (ev.WhoReply(("alice",), True), "* online: alice ..."),
        (ev.Reply("/who  list who is online"), "* /who  list who is online"),
        (ev.Error(ErrorCode.NICK_TAKEN, "the nick bob is taken"), "* error (nick-taken): the nick bob is taken"),
        (ev.Goodbye("server shutting down"), "*** disconnected: server shutting down"),
    ],
)
def test_rendering(event: ev.Event, line: str) -> None:
    assert render(event) == line


@given(any_event)
def test_one_event_one_line_and_only_messages_lack_the_star(event: ev.Event) -> None:
    line = render(event)
    if not isinstance(event, ev.ServerEvent) or isinstance(event, ev.Ping | ev.Pong):
        assert line is None
        return
    assert line is not None
    assert "\n" not in line and "\r" not in line
    if isinstance(event, ev.Message):
        assert line == f"{event.sender}: {event.text}"
    else:
        assert line.startswith("*")


SHOWN = sorted(
    (cls for cls in EVENTS if issubclass(cls, ev.ServerEvent) and cls not in {ev.Ping, ev.Pong}),
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize("cls", SHOWN, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_every_server_event_but_pings_is_rendered(cls: type[ev.Event], data: st.DataObject) -> None:
    assert render(data.draw(EVENTS[cls])) is not None

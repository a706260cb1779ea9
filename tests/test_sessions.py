"""Session objects with a fake clock: liveness, the text session, the UDP opener."""

from __future__ import annotations

import math

from common import fanout
from common.chat import events as ev
from common.chat.hub import Delivery, Hub, Vetted
from common.chat.rooms import LOBBY
from common.session.liveness import Due, Liveness
from common.session.opener import HELLO_RETRY, HELLO_RETRY_MAX, SessionOpener
from common.session.text import TextSession
from common.wire.errors import ErrorCode, FrameRejected, ProtocolError
from common.wire.framing import decode_frame
from common.wire.limits import MAX_DATAGRAM
from tests.test_fanout import Conn

NOW = 1_798_761_600.0

# --- liveness --------------------------------------------------------------------------


def test_an_unregistered_connection_times_out_once_its_deadline_passes() -> None:
    live = Liveness(100.0, register_timeout=10.0, idle_timeout=60.0)
    assert live.due(109.9, registered=False) is None
    assert live.due(110.1, registered=False) is Due.REGISTRATION_TIMEOUT
    assert live.due(110.1, registered=True) is None  # registered in time: that deadline is gone


def test_silence_earns_one_ping_then_the_idle_timeout() -> None:
    live = Liveness(0.0, register_timeout=10.0, idle_timeout=60.0)
    live.heard(5.0)
    assert live.due(34.9, registered=True) is None
    assert live.due(35.1, registered=True) is Due.PING
    assert live.due(40.0, registered=True) is None  # one ping per silence
    assert live.due(65.1, registered=True) is Due.IDLE_TIMEOUT


def test_any_arrival_answers_the_ping() -> None:
    live = Liveness(0.0, register_timeout=10.0, idle_timeout=60.0)
    assert live.due(31.0, registered=True) is Due.PING
    live.heard(32.0)
    assert live.due(61.0, registered=True) is None
    assert live.due(62.1, registered=True) is Due.PING


def test_a_person_at_nc_is_never_pinged() -> None:
    live = Liveness(0.0, register_timeout=10.0)
    assert live.idle_timeout == math.inf
    assert live.due(1e9, registered=True) is None


# --- the text session ------------------------------------------------------------------


def feed(hub: Hub[Conn], conn: Conn, session: TextSession, *lines: str) -> None:
    session.take(hub, conn, list(lines), NOW, lambda out: fanout.deliver(hub, out))


def test_the_first_line_is_the_nick_and_a_refused_one_may_be_retried() -> None:
    hub: Hub[Conn] = Hub()
    taken = Conn("bob")
    fanout.deliver(hub, hub.connect(taken))
    fanout.deliver(hub, hub.receive(taken, ev.Register("bob"), NOW))
    person = Conn("person", text=True)
    assert person.view is not None
    session = TextSession()
    session.view = person.view
    fanout.deliver(hub, hub.connect(person, may_retry=True, echo=False))
    feed(hub, person, session, "", "  BOB  ", "1up", "alice", "hello")
    assert person.lines() == [
        "* error (nick-taken): the nick BOB is taken",
        "* error (bad-nick): '1' cannot start a nick",
        "*** welcome, alice: 1 other online",
        "*** alice joined #lobby",
    ]
    assert ev.Message(LOBBY, "alice", "hello", 1, int(NOW * 1000)) in taken.events()


def test_lines_after_a_join_in_the_same_batch_go_to_the_new_room() -> None:
    hub: Hub[Conn] = Hub()
    friend = Conn("bob")
    fanout.deliver(hub, hub.connect(friend))
    fanout.deliver(hub, hub.receive(friend, ev.Register("bob"), NOW))
    fanout.deliver(hub, hub.receive(friend, ev.Join("#dev"), NOW))
    person = Conn("person", text=True)
    session = TextSession()
    assert person.view is not None
    session.view = person.view
    fanout.deliver(hub, hub.connect(person, may_retry=True, echo=False))
    feed(hub, person, session, "alice", "/join #DEV", "in dev", "/part", "in the lobby", "/join #dev", "/join #lobby")
    said = [e for e in friend.events() if isinstance(e, ev.Message)]
    now = int(NOW * 1000)
    assert said == [ev.Message("#dev", "alice", "in dev", 1, now), ev.Message(LOBBY, "alice", "in the lobby", 1, now)]
    assert person.lines()[-1] == "* now talking in #lobby"


def test_line_errors_are_answered_in_place() -> None:
    hub: Hub[Conn] = Hub()
    person = Conn("person", text=True)
    session = TextSession()
    assert person.view is not None
    session.view = person.view
    fanout.deliver(hub, hub.connect(person, may_retry=True, echo=False))
    session.take(
        hub,
        person,
        ["alice", FrameRejected(ErrorCode.BAD_UTF8, "not UTF-8"), "/dance"],
        NOW,
        lambda o: fanout.deliver(hub, o),
    )
    assert person.lines()[-2:] == [
        "* error (bad-utf8): not UTF-8",
        "* error (unknown-command): unknown command /dance; /help lists the commands",
    ]


def test_deliveries_keep_their_order_when_flushed_early() -> None:
    hub: Hub[Conn] = Hub()
    person = Conn("person", text=True)
    session = TextSession()
    assert person.view is not None
    session.view = person.view
    fanout.deliver(hub, hub.connect(person, may_retry=True, echo=False))
    batches: list[list[Delivery[Conn]]] = []

    def deliver(out: list[Delivery[Conn]]) -> None:
        batches.append(out)
        fanout.deliver(hub, out)

    session.take(hub, person, ["alice", "/who", "/join #dev", "/names"], NOW, deliver)
    assert len(batches) == 3  # after the nick, after the join, at the end
    assert person.lines()[-1] == "* in #dev: alice"


# --- the UDP session opener --------------------------------------------------------------


def test_the_opener_sends_padded_hellos_and_backs_off() -> None:
    opener = SessionOpener()
    first = opener.start(0.0)
    assert len(first) == MAX_DATAGRAM and decode_frame(first) == ev.Hello(b"", bytes(len(first) - 12))
    assert opener.poll(HELLO_RETRY - 0.01) is None
    waits = []
    now = 0.0
    for _ in range(5):
        now = opener.deadline
        assert opener.poll(now) is not None
        waits.append(round(opener.deadline - now, 3))
    assert waits == [2 * HELLO_RETRY, HELLO_RETRY_MAX, HELLO_RETRY_MAX, HELLO_RETRY_MAX, HELLO_RETRY_MAX]


def test_the_opener_echoes_the_cookie_and_stops_at_accept() -> None:
    opener = SessionOpener()
    opener.start(0.0)
    answer = opener.receive(ev.Cookie(b"c00kie"), 0.1)
    assert answer is not None
    hello = decode_frame(answer)
    assert isinstance(hello, ev.Hello) and hello.cookie == b"c00kie" and len(answer) == MAX_DATAGRAM
    assert opener.deadline == 0.1 + HELLO_RETRY
    assert opener.receive(ev.Pong(1), 0.2) is None  # not a handshake frame
    assert opener.receive(ev.Accept(42, False), 0.2) is None
    assert opener.accepted == ev.Accept(42, False)
    assert opener.poll(99.0) is None
    assert opener.receive(ev.Accept(43, False), 0.3) is None and opener.accepted.token == 42


def test_login_after_a_registered_nick_is_found_for_the_edge_and_taken_as_its_verdict() -> None:
    hub: Hub[Conn] = Hub()
    owner = Conn("alice")
    fanout.deliver(hub, hub.connect(owner))
    fanout.deliver(hub, hub.receive(owner, ev.Register("alice"), NOW))
    fanout.deliver(hub, hub.receive(owner, Vetted(ev.RegisterAccount("s3cret"), "", False, "v1"), NOW))
    fanout.deliver(hub, hub.receive(owner, ev.Goodbye(""), NOW))
    person = Conn("person", text=True)
    session = TextSession()
    assert person.view is not None
    session.view = person.view
    fanout.deliver(hub, hub.connect(person, may_retry=True, echo=False))
    # The nick and its /login in one batch: the edge finds the login, with the nick before it.
    lines: list[str | ProtocolError] = ["alice", "/login s3cret", "hello"]
    asks = session.account_events(lines)
    assert asks == {1: ev.Register("alice", "s3cret")}
    # The edge checks the password (here: as if it matched) and hands the verdict on.
    verdict = Vetted(ev.Register("alice", "s3cret"), "v1", True)
    session.take(hub, person, ["alice", verdict, "hello"], NOW, lambda out: fanout.deliver(hub, out))
    assert person.lines()[:2] == [
        "* error (needs-password): the nick alice is registered: give its password (/login PASSWORD at a terminal)",
        "*** welcome, alice: nobody else is here",
    ]
    # Once in, the account commands are found too; other lines are not.
    assert session.account_events(["/password s3cret n3w", "/register x", "/who", "//login x", "hi"]) == {
        0: ev.ChangePassword("s3cret", "n3w"),
        1: ev.RegisterAccount("x"),
    }


def test_a_login_before_any_nick_is_refused_without_asking_anyone() -> None:
    hub: Hub[Conn] = Hub()
    person = Conn("person", text=True)
    session = TextSession()
    assert person.view is not None
    session.view = person.view
    fanout.deliver(hub, hub.connect(person, may_retry=True, echo=False))
    assert session.account_events(["/login pw"]) == {}
    feed(hub, person, session, "/login pw")
    assert person.lines() == ["* error (bad-usage): type the nick first, then /login PASSWORD"]


def test_the_registration_deadline_waits_for_a_password_check() -> None:
    live = Liveness(0.0, register_timeout=10.0)
    live.checking(5.0, on=True)  # a Register with a password, waiting for its turn to be hashed
    assert live.due(60.0, registered=False) is None
    assert live.deadline(registered=False) == math.inf
    live.checking(60.0, on=False)  # the verdict is in: a whole new window for it
    assert live.due(69.0, registered=False) is None
    assert live.due(70.5, registered=False) is Due.REGISTRATION_TIMEOUT

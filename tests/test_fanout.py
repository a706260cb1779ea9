"""The one delivery path: runs, encoding once, text views, slow consumers, last events."""

from __future__ import annotations

from common import fanout
from common.chat import events as ev
from common.chat.hub import Delivery, Hub
from common.chat.rooms import LOBBY
from common.chat.view import ClientView
from common.ports import Batch
from common.wire.errors import ErrorCode
from common.wire.framing import StreamDecoder, encode

NOW = 1_798_761_600.0


class Conn:
    """A recipient that keeps what it is pushed, up to ``limit`` bytes."""

    def __init__(self, name: str, *, text: bool = False, limit: int = 1 << 30) -> None:
        self.name = name
        self.view = ClientView() if text else None
        self.limit = limit
        self.pushes: list[tuple[list[bytes], bool]] = []
        self.queued = 0
        self.closed = False

    def __repr__(self) -> str:
        return self.name

    def push(self, batch: Batch, last: bool) -> bool:
        assert not self.closed, "pushed after its last event"
        if self.queued + len(batch.data) > self.limit and not last:
            return False
        self.queued += len(batch.data)
        self.pushes.append((list(batch.parts), last))
        self.closed = last
        return True

    def events(self) -> list[ev.Event]:
        decoder = StreamDecoder()
        decoder.feed(b"".join(b"".join(parts) for parts, _ in self.pushes))
        return [e for e in decoder.events() if isinstance(e, ev.Event)]

    def lines(self) -> list[str]:
        return b"".join(b"".join(parts) for parts, _ in self.pushes).decode().splitlines()


def register(hub: Hub[Conn], conn: Conn) -> None:
    text = conn.view is not None
    fanout.deliver(hub, hub.connect(conn, may_retry=text, echo=not text))
    fanout.deliver(hub, hub.receive(conn, ev.Register(conn.name), NOW))


def test_a_run_to_one_audience_is_encoded_once_and_pushed_once() -> None:
    hub: Hub[Conn] = Hub()
    alice, bob, carol = Conn("alice"), Conn("bob"), Conn("carol")
    for conn in (alice, bob, carol):
        register(hub, conn)
    before = len(bob.pushes)
    out = hub.take(alice, [ev.Say(LOBBY, f"m{i}") for i in range(5)], NOW)
    fanout.deliver(hub, out)
    assert len(bob.pushes) == before + 1  # five messages, one push
    assert bob.pushes[-1][0] is carol.pushes[-1][0] or bob.pushes[-1][0] == carol.pushes[-1][0]
    said = [ev.Message(LOBBY, "alice", f"m{i}", i + 1, int(NOW * 1000)) for i in range(5)]
    assert bob.events()[-5:] == said
    # The sender is in the audience (its echo), so the run is one for all three.
    assert alice.pushes[-1][0] == bob.pushes[-1][0]
    assert alice.events()[-5:] == said


def test_runs_split_where_the_audience_changes_and_order_holds() -> None:
    hub: Hub[Conn] = Hub()
    alice, bob = Conn("alice"), Conn("bob")
    register(hub, alice)
    register(hub, bob)
    items = [ev.Say(LOBBY, "1"), ev.Who(), ev.Say(LOBBY, "2")]
    fanout.deliver(hub, hub.take(alice, items, NOW))
    said = [e for e in bob.events() if isinstance(e, ev.Message)]
    assert [m.text for m in said] == ["1", "2"]
    assert [type(e) for e in alice.events()[-3:]] == [ev.Message, ev.WhoReply, ev.Message]


def test_text_recipients_get_lines_from_their_own_view() -> None:
    hub: Hub[Conn] = Hub()
    alice, bob, carol = Conn("alice"), Conn("bob", text=True), Conn("carol", text=True)
    for conn in (alice, bob, carol):
        register(hub, conn)
    assert bob.view is not None and carol.view is not None
    fanout.deliver(hub, hub.receive(alice, ev.Join("#dev"), NOW))
    for conn in (bob, carol):
        typed = conn.view.interpret("/join #dev")  # type: ignore[union-attr]
        assert typed.send is not None
        fanout.deliver(hub, hub.receive(conn, typed.send, NOW))
    assert bob.view.current == carol.view.current == "#dev"
    carol.view.interpret("/join #lobby")  # in it already: carol switches back, locally
    fanout.deliver(hub, hub.receive(alice, ev.Say("#dev", "in dev"), NOW))
    assert bob.lines()[-1] == "alice: in dev"
    assert carol.lines()[-1] == "[#dev] alice: in dev"
    assert bob.lines()[:3] == ["*** welcome, bob: 1 other online", "*** bob joined #lobby", "*** carol joined #lobby"]


def test_pings_show_nothing_to_a_person() -> None:
    hub: Hub[Conn] = Hub()
    bob = Conn("bob", text=True)
    register(hub, bob)
    before = list(bob.pushes)
    fanout.deliver(hub, [Delivery((bob,), ev.Ping(7))])
    assert bob.pushes == before


def test_a_slow_consumer_gets_its_farewell_past_the_limit_and_nothing_else() -> None:
    hub: Hub[Conn] = Hub()
    alice, bob, carol = Conn("alice"), Conn("bob"), Conn("carol")
    for conn in (alice, bob, carol):
        register(hub, conn)
    bob.limit = bob.queued + 3 * len(encode(ev.Message(LOBBY, "alice", "x" * 100)))
    for _ in range(5):
        fanout.deliver(hub, hub.take(alice, [ev.Say(LOBBY, "x" * 100)], NOW))
    tail = bob.events()[-2:]
    assert tail == [ev.Error(ErrorCode.SLOW_CONSUMER, fanout.SLOW_DETAIL), ev.Goodbye(fanout.SLOW_DETAIL)]
    assert bob.closed and bob.pushes[-1][1] is True
    assert sum(isinstance(e, ev.Message) for e in bob.events()) == 3
    assert ev.Left("bob", fanout.SLOW_DETAIL) in alice.events()
    assert sum(isinstance(e, ev.Message) for e in carol.events()) == 5
    assert bob not in hub


def test_a_last_event_ends_its_run_and_closes() -> None:
    hub: Hub[Conn] = Hub()
    alice, bob = Conn("alice"), Conn("bob")
    register(hub, alice)
    register(hub, bob)
    fanout.deliver(hub, hub.receive(alice, ev.Goodbye("lunch"), NOW))
    assert alice.closed and alice.events()[-1] == ev.Goodbye("bye")
    assert bob.events()[-1] == ev.Left("alice", "lunch")


def test_notice_sees_welcomes_and_goodbyes() -> None:
    hub: Hub[Conn] = Hub()
    seen: list[type[ev.Event]] = []
    alice = Conn("alice")
    fanout.deliver(hub, hub.connect(alice))
    fanout.deliver(hub, hub.receive(alice, ev.Register("alice"), NOW), lambda d: seen.append(type(d.event)))
    fanout.deliver(hub, hub.receive(alice, ev.Goodbye(""), NOW), lambda d: seen.append(type(d.event)))
    assert seen == [ev.Welcome, ev.Goodbye]

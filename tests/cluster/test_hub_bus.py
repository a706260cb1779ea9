"""Several hubs on one bus, without Redis: the hub's side of clustering, as a
property. ``MemoryBus`` orders events as Redis's script does (a message is
numbered and stored, a notice carries each room's newest seq) and hands each
to every hub; whenever the bus is pumped, in any interleaving with what the
members do, every member of a room gets that room's messages once each, in
one order, without a gap, its replay and the live ones meeting exactly.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from common.chat import events as ev
from common.chat.hub import Delivery, Hub
from common.chat.log import MemoryNicks, MemoryStore
from common.ports import Entry, Posted

ROOMS = ("#a", "#b")


class MemoryBus:
    """One bus for hubs in one process: ``publish`` records, ``pump`` orders
    and hands everything recorded to every hub (as Redis and each server's
    listener do), the store standing in for Redis's streams."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.recorded: list[Posted] = []
        self.hubs: list[Hub[str]] = []
        self.up = True

    def ready(self) -> bool:
        return self.up

    def publish(self, posted: Posted) -> None:
        self.recorded.append(posted)

    def follow(self, key: str) -> None:
        pass  # every hub is handed everything: as if following every room

    def unfollow(self, key: str) -> None:
        pass

    def pump(self, deliver: Callable[[list[Delivery[str]]], None]) -> None:
        while self.recorded:
            posted = self.recorded.pop(0)
            event = posted.event
            if isinstance(event, ev.Message | ev.Action):
                (key,) = posted.rooms
                seq = self.store.append(key, event.time, event.sender, event.text, isinstance(event, ev.Action))
                posted = posted._replace(
                    event=type(event)(event.room, event.sender, event.text, seq, event.time), at=(seq,)
                )
            else:
                posted = posted._replace(at=tuple(self.store.open_room(k, k).last for k in posted.rooms))
            for hub in self.hubs:
                deliver(hub.arrived(posted))


class SharedStore(MemoryStore):
    """The store as a server of many sees it (``ClusterStore``): a room its
    members leave is forgotten here, and kept for the others."""

    def close_room(self, key: str) -> bool:
        return False


class Nicks(MemoryNicks[str]):
    """One nick table for every hub (Redis's, in the real thing)."""


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["join", "say", "say", "say", "part", "pump", "quit"]),
            st.integers(0, 5),  # which member (each hub has two)
            st.sampled_from(ROOMS),
        ),
        max_size=60,
    )
)
def test_hubs_on_one_bus_give_every_member_one_order(steps: list[tuple[str, int, str]]) -> None:
    store = SharedStore()
    bus = MemoryBus(store)
    nicks = Nicks()
    hubs = [Hub[str](store=store, bus=bus, nicks=nicks, replay=5) for _ in range(3)]
    bus.hubs = hubs
    got: dict[str, list[ev.ServerEvent]] = {}

    def deliver(deliveries: list[Delivery[str]]) -> None:
        for delivery in deliveries:
            for conn in delivery.recipients:
                got.setdefault(conn, []).append(delivery.event)

    members = [f"m{i}" for i in range(6)]
    here = {m: False for m in members}

    def hub_of(member: str) -> Hub[str]:
        return hubs[int(member[1:]) // 2]

    spoken = 0
    for action, who, room in steps:
        member = members[who]
        hub = hub_of(member)
        if action == "pump":
            bus.pump(deliver)
            continue
        if not here[member]:
            deliver(hub.connect(member))
            deliver(hub.receive(member, ev.Register(member), 1.0))
            here[member] = True
        if action == "join":
            deliver(hub.receive(member, ev.Join(room), 1.0))
        elif action == "say" and room in hub.rooms_of(member):
            spoken += 1
            deliver(hub.receive(member, ev.Say(room, f"{member} {spoken}"), 1.0))
        elif action == "part" and room in hub.rooms_of(member):
            deliver(hub.receive(member, ev.Part(room, "later"), 1.0))
        elif action == "quit":
            deliver(hub.disconnect(member, "bye"))
            here[member] = False
    bus.pump(deliver)

    check_one_order(got)
    # And every message was given to every member who stayed in its room to the end.
    for member in members:
        if not here[member]:
            continue
        for room in hub_of(member).rooms_of(member):
            last = store.open_room(room, room).last
            seqs = [e.seq for e in got[member] if isinstance(e, ev.Message) and e.room == room]
            assert not seqs or seqs[-1] == last, (member, room, seqs, last)


def check_one_order(got: dict[str, list[ev.ServerEvent]]) -> None:
    """Each member got each room's messages once each, without a gap from
    where its replay started, and a seq means one message at every member."""
    said: dict[tuple[str, int], str] = {}  # (room, seq) -> text: the same at every member
    for member, events in got.items():
        expected: dict[str, int] = {}  # room -> the seq that must come next
        for event in events:
            if isinstance(event, ev.Replay):
                expected[event.room] = event.first if event.first <= event.last else event.last + 1
            elif isinstance(event, ev.Parted) and event.nick == member:
                expected.pop(event.room, None)
            elif isinstance(event, ev.Message):
                assert event.room in expected, f"{member} got {event} outside the room"
                assert event.seq == expected[event.room], f"{member}: {event} after {expected[event.room] - 1}"
                expected[event.room] = event.seq + 1
                assert said.setdefault((event.room, event.seq), event.text) == event.text


def test_a_bus_that_is_down_refuses_room_events_with_store_failed() -> None:
    store = SharedStore()
    bus = MemoryBus(store)
    hub = Hub[str](store=store, bus=bus)
    bus.hubs = [hub]
    hub.connect("c")
    hub.receive("c", ev.Register("ann"), 1.0)
    bus.up = False
    for event in (ev.Say("#lobby", "hi"), ev.Join("#new"), ev.SetTopic("#lobby", "t"), ev.ChangeNick("bea")):
        (refused,) = hub.receive("c", event, 2.0)
        assert isinstance(refused.event, ev.Error) and refused.event.code.name == "STORE_FAILED", refused
    assert bus.recorded == [bus.recorded[0]]  # only the join of the lobby at registration, nothing after
    late = hub.connect("d") + hub.receive("d", ev.Register("cid"), 3.0)
    assert [d.event.code.name for d in late if isinstance(d.event, ev.Error)] == ["STORE_FAILED"]


def test_a_message_the_bus_could_not_take_is_refused_to_its_sender_only() -> None:
    store = SharedStore()
    bus = MemoryBus(store)
    hub = Hub[str](store=store, bus=bus)
    for conn, nick in (("c", "ann"), ("d", "bob")):
        hub.connect(conn)
        hub.receive(conn, ev.Register(nick), 1.0)
    bus.recorded.clear()
    hub.receive("c", ev.Say("#lobby", "lost"), 2.0)
    (posted,) = bus.recorded
    (told,) = hub.unsent(posted, "not sent: Redis went away")
    assert told.recipients == ("c",) and told.event == ev.Error(ev.ErrorCode.STORE_FAILED, "not sent: Redis went away")


def test_messages_filled_from_the_store_skip_their_sender_at_nc_only() -> None:
    store = SharedStore()
    bus = MemoryBus(store)
    hub = Hub[str](store=store, bus=bus)
    hub.connect("nc", echo=False)  # a person at nc sees their own line as they type it
    hub.connect("app")
    for conn, nick in (("nc", "nat"), ("app", "ann")):
        hub.receive(conn, ev.Register(nick), 1.0)
    key = hub.rooms_of("nc")[0]
    seen = store.open_room(key, key).last
    filled = hub.filled(key, [Entry(seen + 1, 5, "nat", "mine", False), Entry(seen + 2, 6, "ann", "hers", False)])
    assert [(d.recipients, d.event.text) for d in filled] == [(("app",), "mine"), (("nc", "app"), "hers")]  # type: ignore[attr-defined]

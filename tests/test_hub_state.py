"""The hub against a plain model, driven by hypothesis through random histories.

The model is a dict of members and their nicks, and a dict of rooms and their
members in join order; each rule predicts exactly who must receive what, and
the invariants check what must hold after every step: the hub's members,
nicks and rooms equal the model's, nicks unique under casefolding, nobody
outside a room gets its events, nobody hears their own message, private
messages reach exactly one member, limits hold, every room's facts are
numbered in order, and any two members saw the events they share (so every
member of a room saw that room's events) in the same order.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from common.chat import events as ev
from common.chat.hub import Delivery, Hub
from common.chat.nicks import nick_key
from common.chat.rooms import LOBBY, room_key
from common.wire.errors import ErrorCode

# Small pools with case and normalisation twins, so collisions are frequent.
NICK_POOL = ["alice", "ALICE", "Маша", "маша", "bob", "Bob", "é", "e\u0301", "carol", "dave"]
ROOM_POOL = [LOBBY, "#dev", "#DEV", "#Кухня", "#кухня", "#ops", "#x"]
nick_choice = st.sampled_from(NICK_POOL)
room_choice = st.sampled_from(ROOM_POOL)
text_choice = st.sampled_from(["hi", "привет 👋", "x" * 50, "/not a command"])

ROOMS_PER_MEMBER = 3
MAX_ROOMS = 4
NOW = 1_798_761_600.0


class HubMachine(RuleBasedStateMachine):
    members = Bundle("members")

    def __init__(self) -> None:
        super().__init__()
        self.hub: Hub[int] = Hub(rooms_per_member=ROOMS_PER_MEMBER, max_rooms=MAX_ROOMS)
        self.model: dict[int, str] = {}  # member -> nick
        self.rooms: dict[str, tuple[str, list[int]]] = {}  # room key -> (name, members in join order)
        self.next_conn = 1
        self.step = 0
        self.inbox: dict[int, list[tuple[int, ev.ServerEvent]]] = {}  # conn -> (step, event)
        self.spoke: dict[int, int] = {}  # step of a chat message -> the conn that said it
        self.last_seq: dict[str, int] = {}  # room key -> the last fact's number
        self.joined: dict[int, list[str]] = {}  # member -> its room keys in the order it joined them

    # --- helpers -------------------------------------------------------------------

    def deliver(self, deliveries: list[Delivery[int]]) -> list[Delivery[int]]:
        for delivery in deliveries:
            self.step += 1
            assert len(set(delivery.recipients)) == len(delivery.recipients), "a recipient listed twice"
            event = delivery.event
            if isinstance(event, ev.Message | ev.Action) and not event.history:
                key = room_key(event.room)
                assert event.seq == self.last_seq.get(key, 0) + 1, "messages numbered out of order"
                self.last_seq[key] = event.seq
            for conn in delivery.recipients:
                self.inbox.setdefault(conn, []).append((self.step, delivery.event))
        return deliveries

    def briefed(self, conn: int, rest: list[Delivery[int]]) -> None:
        """What a joiner alone gets after the notice: the topic if any, then
        the room's history (a Replay and the messages it announces)."""
        assert all(d.recipients == (conn,) for d in rest)
        kinds = [type(d.event) for d in rest]
        assert kinds[: kinds.index(ev.Replay)] in ([], [ev.Topic])
        assert all(isinstance(d.event, ev.Message) and d.event.history for d in rest[kinds.index(ev.Replay) + 1 :])

    def owner(self, nick: str) -> int | None:
        return next((c for c, n in self.model.items() if nick_key(n) == nick_key(nick)), None)

    def rooms_of(self, conn: int) -> list[str]:
        return list(self.joined.get(conn, []))

    def sharing(self, conn: int) -> set[int]:
        return {m for key in self.rooms_of(conn) for m in self.rooms[key][1]} - {conn}

    def drop(self, conn: int, key: str) -> None:
        self.joined[conn].remove(key)
        self.rooms[key][1].remove(conn)
        if not self.rooms[key][1]:
            del self.rooms[key]
            self.last_seq.pop(key, None)  # in memory, an empty room is forgotten, its count too
            self.last_seq.pop(key, None)  # a room made again starts counting again

    # --- rules ---------------------------------------------------------------------

    @rule(target=members, nick=nick_choice)
    def register(self, nick: str) -> int:
        conn = self.next_conn
        self.next_conn += 1
        assert self.deliver(self.hub.connect(conn)) == []
        out = self.deliver(self.hub.receive(conn, ev.Register(nick), NOW))
        if self.owner(nick) is not None:
            assert [type(d.event) for d in out] == [ev.Error, ev.Goodbye]
            assert isinstance(out[0].event, ev.Error) and out[0].event.code is ErrorCode.NICK_TAKEN
            assert conn not in self.hub
            return -conn  # never a member; rules that draw it see it is gone
        welcome, notice, *rest = out
        assert welcome.recipients == (conn,) and isinstance(welcome.event, ev.Welcome)
        self.model[conn] = welcome.event.nick
        lobby = self.rooms.setdefault(room_key(LOBBY), (LOBBY, []))[1]
        lobby.append(conn)
        self.joined[conn] = [room_key(LOBBY)]
        assert notice.recipients == tuple(lobby)
        assert notice.event == ev.Joined(LOBBY, welcome.event.nick)
        self.briefed(conn, rest)
        return conn

    @rule(conn=members, room=room_choice, text=text_choice)
    def say(self, conn: int, room: str, text: str) -> None:
        out = self.deliver(self.hub.receive(conn, ev.Say(room, text), NOW))
        if conn not in self.model:
            assert out == []
            return
        (delivery,) = out
        key = room_key(room)
        if conn not in self.rooms.get(key, ("", []))[1]:
            assert delivery.recipients == (conn,)
            assert isinstance(delivery.event, ev.Error) and delivery.event.code is ErrorCode.NOT_IN_ROOM
            return
        name, room_members = self.rooms[key]
        self.spoke[self.step] = conn
        assert delivery.recipients == tuple(room_members)  # the sender too: its echo
        assert isinstance(delivery.event, ev.Message)
        assert delivery.event == ev.Message(name, self.model[conn], text, delivery.event.seq, int(NOW * 1000))

    @rule(conn=members, room=room_choice)
    def join(self, conn: int, room: str) -> None:
        out = self.deliver(self.hub.receive(conn, ev.Join(room), NOW))
        if conn not in self.model:
            assert out == []
            return
        key = room_key(room)
        mine = self.rooms_of(conn)
        if key in mine:
            assert [(d.recipients, type(d.event)) for d in out] == [((conn,), ev.Reply)]
            return
        full = len(mine) >= ROOMS_PER_MEMBER or (key not in self.rooms and len(self.rooms) >= MAX_ROOMS)
        if full:
            (delivery,) = out
            assert isinstance(delivery.event, ev.Error) and delivery.event.code is ErrorCode.TOO_MANY_ROOMS
            return
        name, room_members = self.rooms.setdefault(key, (room, []))
        room_members.append(conn)
        self.joined[conn].append(key)
        notice, *rest = out
        assert notice.recipients == tuple(room_members)
        assert notice.event == ev.Joined(name, self.model[conn])
        self.briefed(conn, rest)

    @rule(conn=members, room=room_choice)
    def part(self, conn: int, room: str) -> None:
        out = self.deliver(self.hub.receive(conn, ev.Part(room, "later"), NOW))
        if conn not in self.model:
            assert out == []
            return
        (delivery,) = out
        key = room_key(room)
        if key not in self.rooms_of(conn):
            assert isinstance(delivery.event, ev.Error) and delivery.event.code is ErrorCode.NOT_IN_ROOM
            return
        name, room_members = self.rooms[key]
        assert delivery.recipients == tuple(room_members)
        assert delivery.event == ev.Parted(name, self.model[conn], "later")
        self.drop(conn, key)

    @rule(conn=members, to=nick_choice, text=text_choice)
    def whisper(self, conn: int, to: str, text: str) -> None:
        out = self.deliver(self.hub.receive(conn, ev.Whisper(to, text), NOW))
        if conn not in self.model:
            assert out == []
            return
        (delivery,) = out
        owner = self.owner(to)
        if owner is None:
            assert delivery.recipients == (conn,)
            assert isinstance(delivery.event, ev.Error) and delivery.event.code is ErrorCode.NO_SUCH_NICK
        else:
            assert delivery.recipients == (owner,)
            assert delivery.event == ev.Private(self.model[conn], text, int(NOW * 1000))

    @rule(conn=members, nick=nick_choice)
    def rename(self, conn: int, nick: str) -> None:
        out = self.deliver(self.hub.receive(conn, ev.ChangeNick(nick), NOW))
        if conn not in self.model:
            assert out == []
            return
        (delivery,) = out
        owner = self.owner(nick)
        if owner is not None and owner != conn:
            assert isinstance(delivery.event, ev.Error) and delivery.event.code is ErrorCode.NICK_TAKEN
            return
        if isinstance(delivery.event, ev.Reply):  # the very same nick
            return
        assert isinstance(delivery.event, ev.Renamed)
        assert set(delivery.recipients) == {conn} | self.sharing(conn)
        assert delivery.event.old == self.model[conn]
        self.model[conn] = delivery.event.new

    @rule(conn=consumes(members), politely=st.booleans())
    def leave(self, conn: int, politely: bool) -> None:
        audience = self.sharing(conn) if conn in self.model else set()
        out = self.deliver(
            self.hub.receive(conn, ev.Goodbye("bye"), NOW) if politely else self.hub.disconnect(conn, "reset")
        )
        if conn not in self.model:
            assert out == []
            return
        nick = self.model.pop(conn)
        for key in self.rooms_of(conn):
            self.drop(conn, key)
        notices = [d for d in out if isinstance(d.event, ev.Left)]
        if audience:
            (notice,) = notices
            assert set(notice.recipients) == audience
            assert notice.event == ev.Left(nick, "bye" if politely else "reset")
        else:
            assert notices == []
        if politely:
            assert out[0].recipients == (conn,) and isinstance(out[0].event, ev.Goodbye) and out[0].last

    # --- invariants ----------------------------------------------------------------

    @invariant()
    def hub_agrees_with_model(self) -> None:
        assert sorted(self.hub.nicks()) == sorted(self.model.values())
        for conn, nick in self.model.items():
            assert self.hub.nick_of(conn) == nick
            assert [room_key(r) for r in self.hub.rooms_of(conn)] == self.rooms_of(conn)
        assert sorted(room_key(r) for r in self.hub.room_names()) == sorted(self.rooms)
        for name, room_members in self.rooms.values():
            assert self.hub.room_members(name) == tuple(room_members)

    @invariant()
    def limits_hold(self) -> None:
        assert len(self.hub.room_names()) <= MAX_ROOMS
        assert all(len(self.hub.rooms_of(conn)) <= ROOMS_PER_MEMBER for conn in self.model)

    @invariant()
    def nicks_are_unique_under_casefolding(self) -> None:
        keys = [nick_key(n) for n in self.hub.nicks()]
        assert len(keys) == len(set(keys))

    @invariant()
    def shared_events_are_seen_in_one_order(self) -> None:
        views = {conn: [step for step, _ in inbox] for conn, inbox in self.inbox.items()}
        for a, steps_a in views.items():
            assert steps_a == sorted(steps_a)
            for b, steps_b in views.items():
                if a < b:
                    shared = set(steps_a) & set(steps_b)
                    assert [s for s in steps_a if s in shared] == [s for s in steps_b if s in shared]


TestHubMachine = HubMachine.TestCase

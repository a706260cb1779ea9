"""The hub against a plain model, driven by hypothesis through random histories.

The model is a dict of members and their nicks; each rule predicts exactly who
must receive what, and the invariants check what must hold after every step:
nicks unique under casefolding, nobody hears their own message, private
messages reach exactly one member, and any two members saw the events they
share in the same order.
"""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from common.chat import events as ev
from common.chat.hub import Hub
from common.chat.nicks import nick_key
from common.wire.errors import ErrorCode

# A small pool with case and normalisation twins, so collisions are frequent.
NICK_POOL = ["alice", "ALICE", "Маша", "маша", "bob", "Bob", "é", "e\u0301", "carol", "dave"]
nick_choice = st.sampled_from(NICK_POOL)
text_choice = st.sampled_from(["hi", "привет 👋", "x" * 50, "/not a command"])


class HubMachine(RuleBasedStateMachine):
    members = Bundle("members")

    def __init__(self) -> None:
        super().__init__()
        self.hub: Hub[int] = Hub()
        self.model: dict[int, str] = {}  # member -> nick
        self.next_conn = 1
        self.step = 0
        self.inbox: dict[int, list[tuple[int, ev.ServerEvent]]] = {}  # conn -> (step, event)
        self.spoke: dict[int, int] = {}  # step of a chat message -> the conn that said it

    # --- helpers -------------------------------------------------------------------

    def deliver(self, deliveries: list) -> list:  # type: ignore[type-arg]
        for delivery in deliveries:
            self.step += 1
            assert len(set(delivery.recipients)) == len(delivery.recipients), "a recipient listed twice"
            for conn in delivery.recipients:
                self.inbox.setdefault(conn, []).append((self.step, delivery.event))
        return deliveries

    def owner(self, nick: str) -> int | None:
        return next((c for c, n in self.model.items() if nick_key(n) == nick_key(nick)), None)

    # --- rules ---------------------------------------------------------------------

    @rule(target=members, nick=nick_choice)
    def join(self, nick: str) -> int:
        conn = self.next_conn
        self.next_conn += 1
        assert self.deliver(self.hub.connect(conn)) == []
        before = set(self.model)
        out = self.deliver(self.hub.receive(conn, ev.Register(nick)))
        if self.owner(nick) is not None:
            assert [type(d.event) for d in out] == [ev.Error, ev.Goodbye]
            assert out[0].event.code is ErrorCode.NICK_TAKEN
            assert conn not in self.hub
            return -conn  # never a member; rules that draw it see it is gone
        welcome, *rest = out
        assert welcome.recipients == (conn,) and isinstance(welcome.event, ev.Welcome)
        if before:
            (notice,) = rest
            assert set(notice.recipients) == before and isinstance(notice.event, ev.Joined)
        else:
            assert rest == []
        self.model[conn] = welcome.event.nick
        return conn

    @rule(conn=members, text=text_choice)
    def say(self, conn: int, text: str) -> None:
        out = self.deliver(self.hub.receive(conn, ev.Say(text)))
        if conn not in self.model:
            assert out == []
            return
        others = set(self.model) - {conn}
        if not others:
            assert out == []
            return
        (delivery,) = out
        self.spoke[self.step] = conn
        assert conn not in delivery.recipients
        assert set(delivery.recipients) == others
        assert delivery.event == ev.Message(self.model[conn], text)

    @rule(conn=members, to=nick_choice, text=text_choice)
    def whisper(self, conn: int, to: str, text: str) -> None:
        out = self.deliver(self.hub.receive(conn, ev.Whisper(to, text)))
        if conn not in self.model:
            assert out == []
            return
        (delivery,) = out
        owner = self.owner(to)
        if owner is None:
            assert delivery.recipients == (conn,)
            assert delivery.event.code is ErrorCode.NO_SUCH_NICK
        else:
            assert delivery.recipients == (owner,)
            assert delivery.event == ev.Private(self.model[conn], text)

    @rule(conn=members, nick=nick_choice)
    def rename(self, conn: int, nick: str) -> None:
        out = self.deliver(self.hub.receive(conn, ev.ChangeNick(nick)))
        if conn not in self.model:
            assert out == []
            return
        (delivery,) = out
        owner = self.owner(nick)
        if owner is not None and owner != conn:
            assert delivery.event.code is ErrorCode.NICK_TAKEN
            return
        if isinstance(delivery.event, ev.Reply):  # the very same nick
            return
        assert set(delivery.recipients) == set(self.model)
        assert delivery.event.old == self.model[conn]
        self.model[conn] = delivery.event.new

    @rule(conn=consumes(members), politely=st.booleans())
    def leave(self, conn: int, politely: bool) -> None:
        out = self.deliver(
            self.hub.receive(conn, ev.Goodbye("bye")) if politely else self.hub.disconnect(conn, "reset")
        )
        if conn not in self.model:
            assert out == []
            return
        nick = self.model.pop(conn)
        notices = [d for d in out if isinstance(d.event, ev.Left)]
        if self.model:
            (notice,) = notices
            assert set(notice.recipients) == set(self.model)
            assert notice.event.nick == nick
        else:
            assert notices == []
        if politely:
            assert out[0].recipients == (conn,) and isinstance(out[0].event, ev.Goodbye)

    # --- invariants ----------------------------------------------------------------

    @invariant()
    def hub_agrees_with_model(self) -> None:
        assert sorted(self.hub.nicks()) == sorted(self.model.values())
        for conn, nick in self.model.items():
            assert self.hub.nick_of(conn) == nick

    @invariant()
    def nicks_are_unique_under_casefolding(self) -> None:
        keys = [nick_key(n) for n in self.hub.nicks()]
        assert len(keys) == len(set(keys))

    @invariant()
    def nobody_hears_their_own_message(self) -> None:
        # By connection, not by nick: a nick freed by one member may be taken by another.
        for conn, inbox in self.inbox.items():
            for step, event in inbox:
                if isinstance(event, ev.Message):
                    assert self.spoke[step] != conn

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

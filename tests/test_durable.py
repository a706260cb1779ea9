"""Durable before delivered (twinchat.durable), and passwords checked at the
edge (twinchat.gatekeeper), with a real hub, a real writer thread and a store
whose writes the test holds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from common.accounts import ScryptCost, make_verifier
from common.chat import events as ev
from common.chat.hub import Hub
from common.chat.log import MemoryStore
from common.chat.rooms import LOBBY
from common.ports import StoreFault
from common.wire.errors import ErrorCode
from tests.test_fanout import Conn
from twinchat.durable import Courier
from twinchat.gatekeeper import Gatekeeper

NOW = 1_798_761_600.0
WAIT = 5.0
CHEAP = ScryptCost(n=2**4, r=8, p=1)


class HeldStore(MemoryStore):
    """A store that stages every message, and whose writes wait for the test."""

    def __init__(self) -> None:
        super().__init__()
        self.staged: list[int] = []
        self.written: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.writing = threading.Event()
        self.fail_next = False

    def append(self, key: str, time: int, sender: str, text: str, action: bool) -> int:
        seq = super().append(key, time, sender, text, action)
        self.staged.append(seq)
        return seq

    def dirty(self) -> bool:
        return bool(self.staged)

    def detach(self) -> object | None:
        batch, self.staged = self.staged, []
        return batch or None

    def write(self, batch: object) -> None:
        self.writing.set()
        assert self.release.wait(WAIT)
        if self.fail_next:
            self.fail_next = False
            raise StoreFault("the disk is full")
        assert isinstance(batch, list)
        self.written += batch


@pytest.fixture
def chat() -> Iterator[tuple[Hub[Conn], threading.Lock, HeldStore, Courier]]:
    store = HeldStore()
    hub: Hub[Conn] = Hub(store=store)
    lock = threading.Lock()
    courier = Courier(hub, lock, store, None)
    yield hub, lock, store, courier
    courier.close()


def _post(lock: threading.Lock, courier: Courier, out: list[Any]) -> None:
    with lock:
        courier.post(out)


def _join(hub: Hub[Conn], lock: threading.Lock, courier: Courier, *names: str) -> list[Conn]:
    conns = []
    for name in names:
        conn = Conn(name)
        with lock:
            courier.post(hub.connect(conn))
            courier.post(hub.receive(conn, ev.Register(name), NOW))
        conns.append(conn)
    return conns


def _messages(conn: Conn) -> list[str]:
    return [e.text for e in conn.events() if isinstance(e, ev.Message)]


def _until(condition: Any) -> None:
    """Wait (bounded) for ``condition()``: the writer thread delivers on its own time."""
    done = threading.Event()
    for _ in range(500):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("the condition never held")


def test_nothing_is_delivered_before_the_store_has_it(chat: Any) -> None:
    hub, lock, store, courier = chat
    alice, bob = _join(hub, lock, courier, "alice", "bob")
    store.release.clear()  # the next write is held
    _post(lock, courier, hub.receive(alice, ev.Say(LOBBY, "one"), NOW))
    assert store.writing.wait(WAIT)
    # Behind it: another message, and an answer that stores nothing: order holds for both.
    _post(lock, courier, hub.receive(alice, ev.Say(LOBBY, "two"), NOW))
    _post(lock, courier, hub.receive(bob, ev.Who(), NOW))
    assert _messages(bob) == []
    assert not any(isinstance(e, ev.WhoReply) for e in bob.events())
    store.release.set()
    _until(lambda: len(_messages(bob)) == 2 and isinstance(bob.events()[-1], ev.WhoReply))
    assert _messages(bob) == ["one", "two"]
    assert store.written == [1, 2]
    # Every delivered message had been written when it went out.
    assert courier.writes >= 2


def test_messages_posted_during_a_write_share_the_next_one(chat: Any) -> None:
    hub, lock, store, courier = chat
    alice, bob = _join(hub, lock, courier, "alice", "bob")
    store.release.clear()
    _post(lock, courier, hub.receive(alice, ev.Say(LOBBY, "first"), NOW))
    assert store.writing.wait(WAIT)
    writes_before = courier.writes
    for i in range(50):
        _post(lock, courier, hub.receive(alice, ev.Say(LOBBY, f"m{i}"), NOW))
    store.release.set()
    _until(lambda: len(_messages(bob)) == 51)
    assert _messages(bob) == ["first", *(f"m{i}" for i in range(50))]
    assert courier.writes - writes_before == 2  # group commit: "first", then the 50 in one write


def test_a_failed_write_is_survived_and_the_chat_goes_on(chat: Any, caplog: pytest.LogCaptureFixture) -> None:
    hub, lock, store, courier = chat
    alice, bob = _join(hub, lock, courier, "alice", "bob")
    store.fail_next = True
    _post(lock, courier, hub.receive(alice, ev.Say(LOBBY, "still said"), NOW))
    _until(lambda: _messages(bob) == ["still said"])
    assert any("could not write" in r.getMessage() and "disk is full" in r.getMessage() for r in caplog.records)
    _post(lock, courier, hub.receive(alice, ev.Say(LOBBY, "next"), NOW))
    _until(lambda: _messages(bob) == ["still said", "next"])


def test_flush_writes_and_delivers_at_once(chat: Any) -> None:
    hub, lock, store, courier = chat
    alice, bob = _join(hub, lock, courier, "alice", "bob")
    with lock:
        courier.post(hub.receive(alice, ev.Say(LOBBY, "last words"), NOW))
        courier.flush()
        assert _messages(bob) == ["last words"]
        assert store.written[-1] == 1


def test_a_store_that_stages_nothing_delivers_at_once() -> None:
    hub: Hub[Conn] = Hub()
    lock = threading.Lock()
    courier = Courier(hub, lock, MemoryStore(), None)
    try:
        alice, bob = _join(hub, lock, courier, "alice", "bob")
        with lock:
            courier.post(hub.receive(alice, ev.Say(LOBBY, "now"), NOW))
            assert _messages(bob) == ["now"]  # delivered inside post, under the same lock
        assert courier.held == 0
    finally:
        courier.close()


# --- the gatekeeper ----------------------------------------------------------------


@pytest.fixture
def gate() -> Iterator[tuple[Hub[str], threading.Lock, Gatekeeper]]:
    store = MemoryStore()
    hub: Hub[str] = Hub(store=store)
    lock = threading.Lock()
    hub.connect("owner")
    hub.receive("owner", ev.Register("alice"), NOW)
    keeper = Gatekeeper(hub, lock, cost=CHEAP)
    vetted = keeper.vet("owner", "127.0.0.1", ev.RegisterAccount("s3cret"))
    assert vetted.new_verifier.startswith("scrypt$n=16,")
    hub.receive("owner", vetted, NOW)
    hub.receive("owner", ev.Goodbye(""), NOW)
    yield hub, lock, keeper


def test_the_gatekeeper_checks_a_login_against_the_stored_verifier(gate: Any) -> None:
    hub, _, keeper = gate
    hub.connect("guest")
    wrong = keeper.vet("guest", "127.0.0.1", ev.Register("alice", "guess"))
    assert not wrong.ok and wrong.verifier
    right = keeper.vet("guest", "127.0.0.1", ev.Register("Alice", "s3cret"))
    assert right.ok
    assert hub.receive("guest", right, NOW)[0].event == ev.Welcome("Alice", 1)
    assert (keeper.checked, keeper.wrong) == (2, 1)


def test_wrong_passwords_are_throttled_before_anything_is_hashed(gate: Any) -> None:
    hub, _, keeper = gate
    hub.connect("guesser")
    verdicts = [keeper.vet("guesser", "192.0.2.7", ev.Register("alice", f"guess{i}")) for i in range(7)]
    assert [v.wait > 0 for v in verdicts] == [False] * 5 + [True] * 2
    assert keeper.checked == 5  # the refused tries cost no hashing
    refusal = hub.receive("guesser", verdicts[-1], NOW)[0].event
    assert isinstance(refusal, ev.Error) and refusal.code is ErrorCode.TOO_MANY_TRIES
    # Another address may still try the right one; the nick's budget is what is spent.
    assert keeper.vet("guesser", "198.51.100.1", ev.Register("alice", "s3cret")).wait > 0


def test_a_password_change_gets_a_new_verifier_only_with_the_old_password(gate: Any) -> None:
    hub, _, keeper = gate
    hub.connect("back")
    hub.receive("back", keeper.vet("back", "127.0.0.1", ev.Register("alice", "s3cret")), NOW)
    refused = keeper.vet("back", "127.0.0.1", ev.ChangePassword("nope", "n3w"))
    assert not refused.ok and refused.new_verifier == ""
    changed = keeper.vet("back", "127.0.0.1", ev.ChangePassword("s3cret", "n3w"))
    assert changed.ok and changed.new_verifier
    hub.receive("back", changed, NOW)
    assert hub.verifier_for("back", ev.DropAccount("x")) == changed.new_verifier
    assert make_verifier("n3w", cost=CHEAP) != changed.new_verifier  # salted


def test_a_new_account_gets_its_verifier_even_when_checked_before_its_nick_is_taken() -> None:
    # A person at nc pastes "alice" and "/register pw" at once: the edge checks
    # the second line before the hub has taken the first.
    hub: Hub[str] = Hub()
    keeper = Gatekeeper(hub, threading.Lock(), cost=CHEAP)
    hub.connect("person", may_retry=True, echo=False)
    vetted = keeper.vet("person", "127.0.0.1", ev.RegisterAccount("pw"))
    hub.receive("person", ev.Register("alice"), NOW)
    assert isinstance(hub.receive("person", vetted, NOW)[0].event, ev.Reply)
    assert hub.verifier_for("person", ev.DropAccount("x")) == vetted.new_verifier != ""


def test_a_login_against_a_weaker_verifier_stores_a_stronger_one(gate: Any) -> None:
    hub, lock, _ = gate
    stronger = Gatekeeper(hub, lock, cost=ScryptCost(n=2**5, r=8, p=1))
    hub.connect("back")
    vetted = stronger.vet("back", "127.0.0.1", ev.Register("alice", "s3cret"))
    assert vetted.ok and vetted.new_verifier.startswith("scrypt$n=32,")
    hub.receive("back", vetted, NOW)
    assert hub.verifier_for("back", ev.DropAccount("x")) == vetted.new_verifier
    # And the password still opens it.
    hub.receive("back", ev.Goodbye(""), NOW)
    hub.connect("again")
    assert stronger.vet("again", "127.0.0.1", ev.Register("alice", "s3cret")).ok

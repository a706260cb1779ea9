"""SqliteStore and RedisStore against their model, MemoryStore(keep_rooms=True), step by random step.

The same operations go to both; every query must answer the same. Batches are
detached and written at random points (and some detached batches wait before
they are written, as they do in the writer thread's queue), and the store is
closed and reopened (from its file, or on the same Redis and key prefix) at
random points: a restart, which the model follows by closing every room (a
server starts with no members). Epochs are drawn by each store on its own, so
they are compared by mapping: one model epoch always goes with the same store
epoch, and back. The Redis machines run on the session's real redis-server,
each example under a fresh key prefix.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from common.chat.log import MemoryStore
from common.ports import Account, Entry, Kept, RoomRecord
from twinchat.store.redis import RedisStore
from twinchat.store.sqlite import SqliteStore

ROOM_KEYS = st.sampled_from(["#a", "#b"])
ACCOUNT_KEYS = st.sampled_from(["ann", "bob"])
# What the wire can carry: any text but lone surrogates (UTF-8 cannot encode them).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
SEQ = st.integers(min_value=-1, max_value=12)
COUNT = st.integers(min_value=0, max_value=6)


class StoreMachine(RuleBasedStateMachine):
    #: Entries kept per room: small, so that trimming happens within a run.
    limit = 4

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.path = Path(self.tmp.name) / "twinchat.sqlite3"
        self.model = MemoryStore(self.limit, keep_rooms=True)
        self.store: Any = self.make_store()
        self.open: set[str] = set()
        self.held: list[object] = []
        self.epochs: dict[str, str] = {}
        self.epochs_back: dict[str, str] = {}

    def make_store(self) -> Any:
        """The store under test, opened (again, at a restart) on the same data."""
        return SqliteStore(self.path, self.limit)

    def teardown(self) -> None:
        self.store.close()
        self.tmp.cleanup()

    def same_record(self, want: RoomRecord, got: RoomRecord) -> None:
        assert got._replace(epoch="") == want._replace(epoch="")
        assert self.epochs.setdefault(want.epoch, got.epoch) == got.epoch
        assert self.epochs_back.setdefault(got.epoch, want.epoch) == want.epoch

    # -- rooms and history

    @rule(key=ROOM_KEYS)
    def open_room(self, key: str) -> None:
        self.same_record(self.model.open_room(key, key.upper()), self.store.open_room(key, key.upper()))
        self.open.add(key)

    def joined(self, key: str) -> None:
        """Open ``key`` in both stores if no member is in it (a member joins)."""
        if key not in self.open:
            self.open_room(key)

    @rule(key=ROOM_KEYS)
    def close_room(self, key: str) -> None:
        if key in self.open:
            assert self.store.close_room(key) == self.model.close_room(key)
            self.open.discard(key)

    @rule(key=ROOM_KEYS, time=st.integers(0, 2**41), sender=TEXT, text=TEXT, action=st.booleans(), times=COUNT)
    def append(self, *, key: str, time: int, sender: str, text: str, action: bool, times: int) -> None:
        self.joined(key)
        for _ in range(times):
            assert self.store.append(key, time, sender, text, action) == self.model.append(
                key, time, sender, text, action
            )

    @rule(key=ROOM_KEYS, text=st.sampled_from(["", "news"]), by=TEXT, at=st.integers(0, 2**41))
    def set_topic(self, key: str, text: str, by: str, at: int) -> None:
        self.joined(key)
        self.store.set_topic(key, text, by, at)
        self.model.set_topic(key, text, by, at)

    @rule(key=ROOM_KEYS, seq=SEQ, limit=COUNT)
    def after(self, key: str, seq: int, limit: int) -> None:
        assert self.store.after(key, seq, limit) == self.model.after(key, seq, limit)

    @rule(key=ROOM_KEYS, seq=SEQ, limit=COUNT)
    def before(self, key: str, seq: int, limit: int) -> None:
        assert self.store.before(key, seq, limit) == self.model.before(key, seq, limit)

    # -- accounts and kept messages

    @rule(key=ACCOUNT_KEYS, verifier=st.sampled_from(["v1", "v2"]), created=st.integers(0, 10))
    def save_account(self, key: str, verifier: str, created: int) -> None:
        account = Account(key, key.title(), verifier, created)
        self.store.save_account(account)
        self.model.save_account(account)

    @rule(key=ACCOUNT_KEYS)
    def drop_account(self, key: str) -> None:
        self.store.drop_account(key)
        self.model.drop_account(key)

    @rule(key=ACCOUNT_KEYS)
    def account(self, key: str) -> None:
        assert self.store.account(key) == self.model.account(key)

    @rule(key=ACCOUNT_KEYS, sender=TEXT, text=TEXT, time=st.integers(0, 10), times=st.integers(1, 3))
    def keep_private(self, key: str, sender: str, text: str, time: int, times: int) -> None:
        for _ in range(times):
            kept = Kept(sender, text, time)
            assert self.store.keep_private(key, kept) == self.model.keep_private(key, kept)

    @rule(key=ACCOUNT_KEYS)
    def take_privates(self, key: str) -> None:
        assert self.store.take_privates(key) == self.model.take_privates(key)

    # -- staging, writing, restarting

    @rule()
    def detach_and_write(self) -> None:
        self.write_held()
        batch = self.store.detach()
        if batch is not None:
            self.store.write(batch)

    @rule()
    def detach_and_hold(self) -> None:
        batch = self.store.detach()
        if batch is not None:
            self.held.append(batch)

    @rule()
    def write_held(self) -> None:
        for batch in self.held:
            self.store.write(batch)
        self.held.clear()

    @rule()
    def restart(self) -> None:
        # Batches still held are written by close(), as a stopping server's are.
        self.held.clear()
        self.store.close()
        self.store = self.make_store()
        for key in list(self.model._rooms):
            self.model.close_room(key)
        self.open.clear()

    @invariant()
    def same_rooms(self) -> None:
        want = sorted(self.model.rooms(), key=lambda r: r.name)
        got = sorted(self.store.rooms(), key=lambda r: r.name)
        assert len(got) == len(want)
        for w, g in zip(want, got, strict=True):
            self.same_record(w, g)

    @invariant()
    def same_history(self) -> None:
        for key in ("#a", "#b"):
            whole: list[Entry] = self.store.after(key, 0, self.limit + 1)
            assert whole == self.model.after(key, 0, self.limit + 1)


class NoHistoryMachine(StoreMachine):
    """``--history-limit 0``: rooms keep counting, and keep nothing."""

    limit = 0


StoreMachine.TestCase.settings = settings(max_examples=50, stateful_step_count=40, deadline=None)
NoHistoryMachine.TestCase.settings = settings(max_examples=15, stateful_step_count=25, deadline=None)
TestStoreModel = StoreMachine.TestCase
TestNoHistoryModel = NoHistoryMachine.TestCase


class RedisMachine(StoreMachine):
    """The same steps on Redis; ``url`` is set by the test that runs it."""

    url = ""

    def __init__(self) -> None:
        self.prefix = f"test{secrets.token_hex(4)}:"
        super().__init__()

    def make_store(self) -> Any:
        return RedisStore(self.url, self.limit, prefix=self.prefix)


class RedisNoHistoryMachine(RedisMachine):
    limit = 0


def test_redis_store_model(redis_url: str) -> None:
    RedisMachine.url = redis_url
    run_state_machine_as_test(RedisMachine, settings=settings(max_examples=50, stateful_step_count=40, deadline=None))


def test_redis_store_no_history_model(redis_url: str) -> None:
    RedisNoHistoryMachine.url = redis_url
    run_state_machine_as_test(
        RedisNoHistoryMachine, settings=settings(max_examples=15, stateful_step_count=25, deadline=None)
    )

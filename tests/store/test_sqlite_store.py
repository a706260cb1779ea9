"""SqliteStore: restarts, the writer thread, a kill -9, faults at open and at write time.

The model test (``test_store_model.py``) checks the answers; these check what
only a file can get wrong. Every wait is bounded; nothing waits on a sleep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.chat.log import MemoryStore
from common.ports import Account, Entry, Kept, StoreFault
from common.wire.limits import MAX_KEPT
from twinchat.store import DATABASE_NAME, open_store
from twinchat.store.sqlite import SCHEMA_V1, SCHEMA_VERSION, SqliteStore

ROOT = Path(__file__).resolve().parents[2]

#: Seconds any single wait may take (generous: the machine is shared).
WAIT = 20.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / DATABASE_NAME


def fill(store: SqliteStore, key: str, count: int, *, start: int = 0) -> list[int]:
    store.open_room(key, key)
    return [store.append(key, start + i, "ann", f"message {start + i}", i % 2 == 1) for i in range(count)]


def flush(store: SqliteStore) -> None:
    batch = store.detach()
    if batch is not None:
        store.write(batch)


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to the file, closed after (sqlite3's own context
    manager commits but leaves the connection open)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def fault_line(exc: pytest.ExceptionInfo[StoreFault]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# -- restarts ----------------------------------------------------------------


def test_history_epoch_and_seq_survive_a_restart(path: Path) -> None:
    store = SqliteStore(path, 100)
    epoch = store.open_room("#a", "#A").epoch
    fill(store, "#a", 5)
    store.set_topic("#a", "news", "ann", 7)
    store.close()

    store = SqliteStore(path, 100)
    (record,) = store.rooms()
    assert (record.name, record.epoch, record.first, record.last, record.topic) == ("#A", epoch, 1, 5, "news")
    assert store.open_room("#a", "#A") == record
    assert store.append("#a", 9, "bob", "again", False) == 6
    assert [e.seq for e in store.after("#a", 0, 10)] == [1, 2, 3, 4, 5, 6]
    assert store.after("#a", 1, 2) == [Entry(2, 1, "ann", "message 1", True), Entry(3, 2, "ann", "message 2", False)]
    store.close()


def test_a_restart_forgets_rooms_with_neither_history_nor_topic(path: Path) -> None:
    store = SqliteStore(path)
    store.open_room("#empty", "#empty")
    store.open_room("#topic", "#topic")
    store.set_topic("#topic", "only a topic", "ann", 1)
    flush(store)
    store.close()  # as after a crash: the rooms' members are gone, no close_room was called

    store = SqliteStore(path)
    assert [r.name for r in store.rooms()] == ["#topic"]
    store.close()


def test_a_forgotten_room_starts_a_new_epoch_at_seq_one(path: Path) -> None:
    store = SqliteStore(path)
    first = store.open_room("#a", "#a")
    flush(store)
    assert store.close_room("#a") is False
    second = store.open_room("#a", "#a")
    assert second.epoch != first.epoch
    assert store.append("#a", 1, "ann", "hi", False) == 1
    assert store.close_room("#a") is True  # it has history now
    store.close()
    with raw(path) as db:
        assert db.execute("SELECT epoch, last FROM rooms").fetchall() == [(second.epoch, 1)]


def test_a_smaller_history_limit_trims_at_open(path: Path) -> None:
    store = SqliteStore(path, 10)
    fill(store, "#a", 10)
    store.close()

    store = SqliteStore(path, 3)
    (record,) = store.rooms()
    assert (record.first, record.last) == (8, 10)
    assert [e.seq for e in store.before("#a", 0, 10)] == [8, 9, 10]
    store.close()
    with raw(path) as db:
        assert db.execute("SELECT min(seq), count(*) FROM messages").fetchone() == (8, 3)


def test_retention_deletes_old_rows_when_written(path: Path) -> None:
    store = SqliteStore(path, 5)
    fill(store, "#a", 12)
    flush(store)
    with raw(path) as db:
        assert db.execute("SELECT min(seq), max(seq), count(*) FROM messages").fetchone() == (8, 12, 5)
    assert store.rooms()[0].first == 8
    store.close()


def test_close_writes_batches_detached_but_never_written(path: Path) -> None:
    store = SqliteStore(path)
    fill(store, "#a", 3)
    assert store.detach() is not None  # the writer thread stopped before writing it
    store.save_account(Account("ann", "Ann", "v", 1))
    store.close()
    store.close()  # idempotent

    store = SqliteStore(path)
    assert [e.seq for e in store.after("#a", 0, 10)] == [1, 2, 3]
    assert store.account("ann") == Account("ann", "Ann", "v", 1)
    store.close()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


def test_the_file_is_in_wal_mode(path: Path) -> None:
    SqliteStore(path).close()
    with raw(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


# -- staged changes and what a query sees -------------------------------------


def test_a_newer_staged_account_outlives_the_write_of_an_older_one(path: Path) -> None:
    store = SqliteStore(path)
    store.save_account(Account("ann", "Ann", "old", 1))
    first = store.detach()
    store.save_account(Account("ann", "Ann", "new", 1))
    assert first is not None
    store.write(first)
    held = store.detach()  # settles the first batch; the second is not written yet
    assert held is not None
    assert store.account("ann") == Account("ann", "Ann", "new", 1)
    store.drop_account("ann")
    assert store.account("ann") is None
    store.write(held)
    flush(store)
    assert store.account("ann") is None
    store.close()


def test_entries_staged_while_a_batch_was_in_flight_outlive_its_write(path: Path) -> None:
    store = SqliteStore(path)
    fill(store, "#a", 3)
    held = store.detach()
    assert held is not None
    store.append("#a", 3, "ann", "staged during the write", False)
    store.write(held)
    later = store.detach()  # settles the held batch, detaches the fourth entry
    assert later is not None
    assert [e.seq for e in store.after("#a", 0, 10)] == [1, 2, 3, 4]
    assert [e.text for e in store.before("#a", 0, 1)] == ["staged during the write"]
    store.write(later)
    store.close()


def test_kept_messages_are_bounded_taken_once_and_dropped_with_the_account(path: Path) -> None:
    store = SqliteStore(path)
    for i in range(MAX_KEPT):
        assert store.keep_private("ann", Kept("bob", f"p{i}", i))
        if i % 10 == 0:
            flush(store)
    assert store.keep_private("ann", Kept("bob", "one too many", 0)) is False
    taken = store.take_privates("ann")
    assert [k.text for k in taken] == [f"p{i}" for i in range(MAX_KEPT)]
    assert store.take_privates("ann") == []
    store.keep_private("bob", Kept("ann", "for bob", 1))
    flush(store)
    store.drop_account("bob")
    store.close()

    store = SqliteStore(path)
    assert store.take_privates("ann") == []
    assert store.take_privates("bob") == []
    store.close()


class WriterThread(threading.Thread):
    """The server's writer: detaches under the hub lock, writes outside it,
    until told to stop and nothing is left; records the seqs it wrote."""

    def __init__(self, store: SqliteStore, hub: threading.Lock) -> None:
        super().__init__()
        self.store = store
        self.hub = hub
        self.staged = threading.Event()
        self.wrote = threading.Event()
        self.done = threading.Event()
        self.written: list[int] = []
        self.batches = 0
        self.failures: list[BaseException] = []

    def run(self) -> None:
        try:
            while True:
                finished = self.done.is_set()
                with self.hub:
                    batch = self.store.detach()
                if batch is None:
                    if finished:
                        return
                    self.staged.wait(WAIT)
                    self.staged.clear()
                    continue
                self.written.extend(row[1] for row in batch.messages)  # type: ignore[attr-defined]
                self.store.write(batch)
                self.batches += 1
                self.wrote.set()
        except BaseException as exc:
            self.failures.append(exc)

    def stop(self) -> None:
        self.done.set()
        self.staged.set()
        self.join(WAIT)
        assert not self.is_alive()


def test_the_writer_in_its_own_thread(path: Path) -> None:
    """One thread appends (under a 'hub lock') and checks every reply is a gap-free
    run; the writer detaches under the lock and writes outside it, concurrently.
    Every appended entry must be written exactly once."""
    store = SqliteStore(path, 100_000)
    hub = threading.Lock()
    with hub:
        store.open_room("#a", "#a")
    total = 3000
    writer = WriterThread(store, hub)
    writer.start()
    try:
        for i in range(total):
            with hub:
                seq = store.append("#a", i, "ann", f"m{i}", False)
                if seq % 7 == 0:
                    recent = [e.seq for e in store.after("#a", max(0, seq - 25), 25)]
                    assert recent == list(range(max(1, seq - 24), seq + 1))
                    newest = [e.seq for e in store.before("#a", 0, 20)]
                    assert newest == list(range(max(1, seq - 19), seq + 1))
            writer.staged.set()
            if i % 100 == 99:  # let a write land now and then, whatever the scheduler does
                assert writer.wrote.wait(WAIT)
                writer.wrote.clear()
    finally:
        writer.stop()
    assert writer.failures == []
    assert sorted(writer.written) == writer.written == list(range(1, total + 1))
    assert writer.batches >= total // 100
    store.close()
    with raw(path) as db:
        assert db.execute("SELECT min(seq), max(seq), count(*) FROM messages").fetchone() == (1, total, total)


def test_queries_do_not_wait_for_a_writer_and_a_blocked_write_fails_soon(path: Path) -> None:
    store = SqliteStore(path)
    fill(store, "#a", 3)
    flush(store)
    store.append("#a", 3, "ann", "staged", False)
    other = sqlite3.connect(path, isolation_level=None)  # another program holding the write lock
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO accounts VALUES ('zed', 'Zed', 'v', 1)")
    try:
        # A reader that waited for the lock would give up after BUSY_TIMEOUT
        # with "database is locked"; these answer, from the last commit.
        assert [e.seq for e in store.after("#a", 0, 10)] == [1, 2, 3, 4]
        assert store.account("zed") is None
        batch = store.detach()
        assert batch is not None
        started = time.monotonic()
        with pytest.raises(StoreFault, match="locked") as exc:
            store.write(batch)
        assert "kept to retry" in fault_line(exc)
        assert time.monotonic() - started < WAIT
    finally:
        other.execute("ROLLBACK")
        other.close()
    flush(store)  # nothing new: the retry is the next write's
    store.append("#a", 4, "ann", "after", False)
    flush(store)
    store.close()
    with raw(path) as db:
        assert db.execute("SELECT max(seq), count(*) FROM messages").fetchone() == (5, 5)


# -- a kill -9 -----------------------------------------------------------------

CHILD = """
import sys
from twinchat.store.sqlite import SqliteStore
store = SqliteStore(sys.argv[1], 1_000_000)
store.open_room("#a", "#a")
for i in range(1_000_000):
    for _ in range(i % 4 + 1):
        seq = store.append("#a", i, "ann", "x" * 40, i % 2 == 0)
    store.write(store.detach())
    print(seq, flush=True)
"""


@pytest.mark.timeout(60)
def test_every_write_that_returned_survives_a_kill_9(path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    printed: list[int] = []
    try:
        assert child.stdout is not None
        while len(printed) < 300:
            line = child.stdout.readline()
            if not line:
                break
            printed.append(int(line))
        os.kill(child.pid, signal.SIGKILL)
        out, err = child.communicate(timeout=WAIT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(WAIT)
    assert len(printed) == 300, err
    assert child.returncode == -signal.SIGKILL
    printed.extend(int(line) for line in out.split())
    last = printed[-1]

    store = SqliteStore(path, 1_000_000)  # the lock died with the child
    (record,) = store.rooms()
    assert record.last >= last
    kept = [e.seq for e in store.after("#a", 0, last)]
    assert kept == list(range(1, last + 1))
    store.close()


# -- faults at open ----------------------------------------------------------------


def test_garbage_is_not_a_database(path: Path) -> None:
    path.write_bytes(b"not a database at all " * 200)
    with pytest.raises(StoreFault, match="not a SQLite database") as exc:
        SqliteStore(path)
    assert str(path) in fault_line(exc)


@pytest.mark.parametrize("damage", ["pages", "truncated"])
def test_a_corrupt_database_is_refused(path: Path, damage: str) -> None:
    store = SqliteStore(path)
    fill(store, "#a", 2000)
    store.close()
    data = bytearray(path.read_bytes())
    if damage == "pages":
        data[8192 : 8192 + 4 * 4096] = b"\x5a" * (4 * 4096)
    else:
        del data[len(data) // 2 :]
    path.write_bytes(bytes(data))
    with pytest.raises(StoreFault, match="corrupt") as exc:
        SqliteStore(path)
    assert "backup" in fault_line(exc)


def test_a_second_server_on_the_same_file_is_refused(path: Path) -> None:
    first = SqliteStore(path)
    with pytest.raises(StoreFault, match="in use by another twinchat server") as exc:
        SqliteStore(path)
    assert "--data-dir" in fault_line(exc)
    first.close()
    SqliteStore(path).close()  # the lock went with the first


def test_a_newer_schema_is_refused(path: Path) -> None:
    SqliteStore(path).close()
    with raw(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreFault, match="newer than this twinchat knows") as exc:
        SqliteStore(path)
    fault_line(exc)


def test_another_programs_database_is_refused(path: Path) -> None:
    with raw(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(StoreFault, match="not twinchat's") as exc:
        SqliteStore(path)
    fault_line(exc)


@contextlib.contextmanager
def immutable(target: Path) -> Iterator[None]:
    """``target`` read-only even for root (the tests run as root, for whom
    chmod stops nothing): the immutable attribute, where the filesystem and
    our capabilities allow it; the test fails loudly where they do not
    (``.ci/run`` installs e2fsprogs, which has chattr)."""
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.fail("no chattr to make a file read-only for root: apt-get install -y e2fsprogs")
    made = subprocess.run([chattr, "+i", str(target)], capture_output=True, timeout=WAIT, check=False)
    if made.returncode:
        pytest.fail(f"cannot make {target} immutable here: {made.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(target)], timeout=WAIT, check=True)


def test_a_read_only_directory(path: Path) -> None:
    with immutable(path.parent), pytest.raises(StoreFault, match="cannot create its lock file") as exc:
        SqliteStore(path)
    assert "writable" in fault_line(exc)
    store = SqliteStore(path)
    fill(store, "#a", 2)
    store.close()
    with immutable(path.parent), pytest.raises(StoreFault, match="unable to open database file") as exc:
        SqliteStore(path)  # no room for its write-ahead log beside it
    assert "writable" in fault_line(exc)


def test_a_read_only_database_file(path: Path) -> None:
    store = SqliteStore(path)
    fill(store, "#a", 2)
    store.close()
    with immutable(path), pytest.raises(StoreFault, match="readonly") as exc:
        SqliteStore(path)
    assert "read-only" in fault_line(exc)
    store = SqliteStore(path)  # nothing was lost
    assert [e.seq for e in store.after("#a", 0, 5)] == [1, 2]
    store.close()


def test_a_file_where_the_directory_should_be(tmp_path: Path) -> None:
    """A data directory that cannot be made, and a database path under a file."""
    blocker = tmp_path / "data"
    blocker.write_text("a file, not a directory")
    with pytest.raises(StoreFault, match="cannot create its lock file") as exc:
        SqliteStore(blocker / DATABASE_NAME)
    assert "writable" in fault_line(exc)
    with pytest.raises(StoreFault, match="cannot make the data directory") as exc:
        open_store(str(blocker), 10)
    fault_line(exc)


def test_a_directory_where_the_file_should_be(path: Path) -> None:
    path.mkdir()
    with pytest.raises(StoreFault, match="unable to open database file") as exc:
        SqliteStore(path)
    fault_line(exc)


def test_a_version_1_file_is_migrated_at_open(path: Path) -> None:
    with raw(path) as db:
        db.executescript(SCHEMA_V1)
        db.execute("INSERT INTO rooms VALUES ('#a', '#A', 'e1', 1, 2, 'old topic', 'ann', 5)")
        db.execute("INSERT INTO messages VALUES ('#a', 1, 10, 'ann', 'one'), ('#a', 2, 11, 'bob', 'two')")
    store = SqliteStore(path)
    assert store.rooms()[0].epoch == "e1"
    assert store.after("#a", 0, 5) == [Entry(1, 10, "ann", "one", False), Entry(2, 11, "bob", "two", False)]
    assert store.append("#a", 12, "ann", "waves", True) == 3
    store.close()
    with raw(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("SELECT action FROM messages ORDER BY seq").fetchall() == [(0,), (0,), (1,)]


# -- faults at write time --------------------------------------------------------


def refuse_writes(store: SqliteStore) -> sqlite3.Connection:
    """A switch on the store's write connection: while on, inserting a message
    raises inside the transaction, as a full disk or an I/O error would."""
    writer = store._writer
    assert writer is not None
    writer.executescript(
        """
        CREATE TEMP TABLE switch (on_ INTEGER);
        INSERT INTO temp.switch VALUES (1);
        CREATE TEMP TRIGGER refuse BEFORE INSERT ON main.messages WHEN (SELECT on_ FROM temp.switch)
        BEGIN SELECT RAISE(ABORT, 'injected fault'); END;
        """
    )
    return writer


def test_a_failed_write_keeps_the_batch_and_the_next_write_retries_it(path: Path) -> None:
    store = SqliteStore(path)
    fill(store, "#a", 3)
    store.save_account(Account("ann", "Ann", "v", 1))
    writer = refuse_writes(store)
    batch = store.detach()
    assert batch is not None
    with pytest.raises(StoreFault, match="injected fault") as exc:
        store.write(batch)
    assert "kept to retry with the next write" in fault_line(exc)
    assert [e.seq for e in store.after("#a", 0, 10)] == [1, 2, 3]  # still answered from memory
    store.append("#a", 3, "ann", "more", False)
    writer.execute("UPDATE temp.switch SET on_ = 0")
    flush(store)
    store.close()

    store = SqliteStore(path)
    assert [e.seq for e in store.after("#a", 0, 10)] == [1, 2, 3, 4]
    assert store.account("ann") == Account("ann", "Ann", "v", 1)
    store.close()


def test_the_retry_backlog_is_bounded_and_says_what_it_lost(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SqliteStore(path)
    store.backlog_limit = 10
    fill(store, "#a", 6)
    writer = refuse_writes(store)
    with caplog.at_level(logging.ERROR, logger="twinchat.store"):
        for _ in range(3):  # three batches of 6 messages and a room row each
            with pytest.raises(StoreFault):
                flush(store)
            fill(store, "#a", 6, start=100)
    # The second failure passes the limit (14 rows) and drops the first six
    # messages; the third drops the next six.
    lost = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and r.exc_info is None]
    assert len(lost) == len(caplog.records) == 2
    assert all("dropped 6 unwritten messages" in line and "\n" not in line for line in lost)
    writer.execute("UPDATE temp.switch SET on_ = 0")
    flush(store)
    store.close()

    store = SqliteStore(path)
    (record,) = store.rooms()
    assert record.last == 24  # the room's numbering is intact
    assert [e.seq for e in store.after("#a", 0, 30)] == list(range(13, 25))  # the oldest twelve are lost
    store.close()


def test_a_write_after_close_is_a_fault_not_a_crash(path: Path) -> None:
    store = SqliteStore(path)
    fill(store, "#a", 1)
    batch = store.detach()
    store.close()
    assert batch is not None
    store.write(batch)  # close() wrote it already: nothing to do
    store.append("#a", 1, "ann", "too late", False)
    late = store.detach()
    assert late is not None
    with pytest.raises(StoreFault, match="closed"):
        store.write(late)
    with pytest.raises(StoreFault, match="closed"):
        store.after("#a", 0, 5)


# -- open_store ----------------------------------------------------------------------


def test_open_store_picks_memory_or_a_file_in_a_new_directory(tmp_path: Path) -> None:
    memory = open_store("", 5)
    assert isinstance(memory, MemoryStore)
    assert memory.keep_rooms is False
    data_dir = tmp_path / "deep" / "data"
    store = open_store(str(data_dir), 5)
    assert isinstance(store, SqliteStore)
    assert store.path == data_dir / DATABASE_NAME
    assert store.history_limit == 5
    store.close()

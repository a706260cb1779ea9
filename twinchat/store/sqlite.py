"""The SQLite store: rooms, their history, accounts and kept private messages in one file.

``SqliteStore`` implements ``common.ports.Store`` with the semantics of
``common.chat.log.MemoryStore(keep_rooms=True)`` (its model in the tests), and
makes them survive a restart or a ``kill -9``.

Strategy. The hub calls every method but ``write`` under its lock, one thread
at a time, and must never wait for the disk there; the server's writer thread
calls ``write`` outside the lock, at the same time. So the store has two sides
that share no lock:

- The *hub side* (under the hub's lock) owns everything in memory: each
  room's counters (``first``, ``last``, epoch, topic), loaded at open, so that
  ``append`` is a few attribute updates and no SQL; and an *overlay* of every
  change not yet known to be committed (the room's unwritten entries, staged
  accounts, kept messages added and taken). A change goes into the overlay and
  into the *pending* batch; ``detach`` hands the pending batch over and keeps
  it in the in-flight queue.
- The *writer side* owns the write connection and the retry backlog. ``write``
  commits the backlog and the new batch in one transaction, then publishes the
  number of the last batch written (``_done``: one int, assigned once).

Queries merge the overlay (which wins) with what a second, read-only
connection finds in the file. Whatever the writer commits meanwhile is
harmless: a committed change is still in the overlay until the hub side
*settles* it (in ``detach``, seeing ``_done``), so the merge dedupes by seq or
id, and a room's committed rows are read only up to ``committed``, the seq the
hub side last settled, and its unwritten entries above it. WAL mode lets the
reader read while the writer writes, so no query waits for the disk to be
written (only, rarely, to be read).

Durability: ``synchronous=NORMAL`` in WAL mode puts each commit in the WAL file
(the OS's page cache) before ``write`` returns, which survives a ``kill -9`` of
the process; it does not survive a power loss or an OS crash since the last
checkpoint (the WAL is synced only then): those commits may be rolled back, the
file stays consistent.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections import deque
from pathlib import Path
from typing import Any, Final

from common.chat.log import DEFAULT_HISTORY_LIMIT, new_epoch, outlives_members
from common.ports import Account, Entry, Kept, RoomRecord, StoreFault
from common.wire.limits import MAX_KEPT

log = logging.getLogger("twinchat.store")

#: Seconds between two checkpoints of the WAL into the database.
CHECKPOINT_EVERY: Final = 1.0

#: The schema this code reads and writes (``PRAGMA user_version``).
SCHEMA_VERSION: Final = 2

#: The first schema: messages had no ``action`` column. A new file is made at
#: version 1 and migrated, so the migration path runs (and is tested) on every
#: new store, and the schema is written down once.
SCHEMA_V1: Final = """
CREATE TABLE rooms (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, epoch TEXT NOT NULL,
    first INTEGER NOT NULL, last INTEGER NOT NULL,
    topic TEXT NOT NULL, topic_by TEXT NOT NULL, topic_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE messages (
    room TEXT NOT NULL, seq INTEGER NOT NULL, time INTEGER NOT NULL,
    sender TEXT NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (room, seq)
) WITHOUT ROWID;
CREATE TABLE accounts (
    key TEXT PRIMARY KEY, nick TEXT NOT NULL, verifier TEXT NOT NULL, created INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE kept (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, sender TEXT NOT NULL, text TEXT NOT NULL, time INTEGER NOT NULL
);
CREATE INDEX kept_by_key ON kept (key, id);
PRAGMA user_version = 1;
"""

#: Version N's file to version N + 1 (run in one transaction each).
MIGRATIONS: Final = {
    1: "ALTER TABLE messages ADD COLUMN action INTEGER NOT NULL DEFAULT 0; PRAGMA user_version = 2;",
}

#: Most changes (rows) kept for retrying while writes fail; past it the oldest
#: messages are dropped, and logged as lost.
MAX_BACKLOG_ROWS: Final = 100_000

#: Seconds a connection waits for a lock held by another one (never by our own
#: reader: WAL readers do not block the writer). Only another program opening
#: the file (a backup, a sqlite3 shell) could make us wait; then we fail soon.
BUSY_TIMEOUT: Final = 0.25

#: Problems ``PRAGMA quick_check`` reports before it stops (one names the fault).
QUICK_CHECK_LIMIT: Final = 1

_ROOM_COLUMNS: Final = "key, name, epoch, first, last, topic, topic_by, topic_at"

RoomRow = tuple[str, str, str, int, int, str, str, int]
KeptRow = tuple[int, str, str, str, int]


class _Room:
    """A room's counters and its entries not yet known to be in the file."""

    __slots__ = ("committed", "epoch", "first", "last", "name", "topic", "topic_at", "topic_by", "unwritten")

    def __init__(self, name: str, epoch: str, first: int, last: int, limit: int) -> None:
        self.name = name
        self.epoch = epoch
        self.first = first
        self.last = last
        self.topic = ""
        self.topic_by = ""
        self.topic_at = 0
        #: Every seq up to this one is in the file (or was lost to a full backlog).
        self.committed = last
        #: The entries above ``committed``; a query never needs more than the
        #: last ``limit`` of them (older ones fall below ``first``).
        self.unwritten: deque[Entry] = deque(maxlen=limit)

    def record(self) -> RoomRecord:
        return RoomRecord(self.name, self.epoch, self.first, self.last, self.topic, self.topic_by, self.topic_at)

    def row(self, key: str) -> RoomRow:
        return (key, self.name, self.epoch, self.first, self.last, self.topic, self.topic_by, self.topic_at)


class _Batch:
    """Changes staged between two ``detach`` calls; opaque to the server."""

    __slots__ = ("accounts", "kept_add", "kept_del", "marks", "messages", "number", "reset", "room_rows", "rooms")

    def __init__(self, number: int) -> None:
        self.number = number
        # Rows as the INSERT takes them, made once in ``append``: (room, seq,
        # time, sender, text, action).
        self.messages: list[tuple[str, int, int, str, str, bool]] = []
        #: Rooms changed (hub side, until detach turns them into ``room_rows``).
        self.rooms: dict[str, _Room] = {}
        self.room_rows: list[RoomRow] = []
        #: (room, its last seq at detach): what settling this batch prunes.
        self.marks: list[tuple[_Room, int]] = []
        #: Rooms forgotten: their rows go first (a room may be reopened after).
        self.reset: set[str] = set()
        self.accounts: dict[str, Account | None] = {}
        self.kept_add: list[KeptRow] = []
        self.kept_del: list[int] = []

    def __len__(self) -> int:
        return (
            len(self.messages)
            + len(self.rooms)
            + len(self.room_rows)
            + len(self.reset)
            + len(self.accounts)
            + len(self.kept_add)
            + len(self.kept_del)
        )


class SqliteStore:
    """The store in a SQLite file (``common.ports.Store``).

    Args:
        path: the database file (its directory must exist). A lock file
            beside it, named as it is with ``.lock`` for its suffix
            (``twinchat.lock``), keeps a second server out.
        history_limit: entries kept per room; older ones are deleted.

    Raises:
        StoreFault: the file cannot be used (not a database, corrupt, held by
            another server, read-only, from a newer twinchat): one line naming
            the file and what to do.
    """

    #: Rows kept for retrying while writes fail (see ``MAX_BACKLOG_ROWS``).
    backlog_limit: int = MAX_BACKLOG_ROWS

    def __init__(self, path: str | Path, history_limit: int = DEFAULT_HISTORY_LIMIT) -> None:
        if history_limit < 0:
            raise ValueError(f"history_limit must be 0 or more, not {history_limit}")
        self.path = Path(path)
        self.history_limit = history_limit
        # Hub side.
        self._rooms: dict[str, _Room] = {}
        self._accounts: dict[str, tuple[Account | None, int]] = {}
        self._kept_new: dict[str, dict[int, Kept]] = {}
        self._kept_gone: set[int] = set()
        self._next_kept = 1
        self._pending = _Batch(1)
        self._inflight: deque[_Batch] = deque()
        # Writer side.
        self._write_lock = threading.Lock()
        self._backlog: deque[_Batch] = deque()
        self._done = 0
        self._closed = False
        self._lock_fd = _take_lock(self.path.with_suffix(".lock"), self.path)
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None
        try:
            self._writer = _connect(self.path)
            self._prepare(self._writer)
            self._load(self._writer)
            self._reader = _connect(self.path)
            self._reader.execute("PRAGMA query_only = ON")
            self._checkpointer = _Checkpointer(self.path)
        except (sqlite3.Error, OSError) as exc:
            self._release()
            raise _open_fault(self.path, exc) from None
        except StoreFault:
            self._release()
            raise

    # -- opening -----------------------------------------------------------

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Check the file, switch it to WAL, and bring its schema up to date."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreFault(
                f"store {self.path}: schema version {version} is newer than this twinchat knows "
                f"({SCHEMA_VERSION}); run a newer twinchat, or choose another --data-dir"
            )
        if version == 0:
            if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise StoreFault(
                    f"store {self.path}: a SQLite database but not twinchat's (no schema version); "
                    "move it aside, or choose another --data-dir"
                )
        else:
            # Reads every page once: O(file size), bounded in what it reports.
            problems = [" ".join(row[0].split()) for row in db.execute(f"PRAGMA quick_check({QUICK_CHECK_LIMIT})")]
            if problems != ["ok"]:
                raise StoreFault(
                    f"store {self.path} is corrupt ({'; '.join(problems)}); restore it from a backup, "
                    "or move it aside to start with an empty store"
                )
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreFault(
                f"store {self.path}: cannot use write-ahead logging (journal mode {mode}); is it read-only?"
            )
        db.execute("PRAGMA synchronous = NORMAL")
        # Checkpoints run on a thread of their own (``_Checkpointer``): made
        # by a commit, one stalls that commit, and with it every delivery
        # waiting for it, for milliseconds (the latency p99 doubled).
        db.execute("PRAGMA wal_autocheckpoint = 0")
        if version == 0:
            db.executescript(f"BEGIN IMMEDIATE; {SCHEMA_V1} COMMIT;")
            version = 1
        while version < SCHEMA_VERSION:
            db.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[version]} COMMIT;")
            version += 1

    def _load(self, db: sqlite3.Connection) -> None:
        """Read the rooms; forget those with neither history nor a topic (their
        members left when the server stopped) and trim to ``history_limit``."""
        rows = db.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms").fetchall()
        db.execute("BEGIN IMMEDIATE")
        try:
            # A write that changes nothing, to learn now (not at the first
            # write()) that the file is read-only: SQLite opens such a file
            # read-only without a word, and BEGIN IMMEDIATE succeeds on it.
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            for key, name, epoch, first, last, topic, topic_by, topic_at in rows:
                keep_from = max(first, last + 1 - self.history_limit)
                if not outlives_members(key, history=keep_from <= last, topic=topic):
                    db.execute("DELETE FROM rooms WHERE key = ?", (key,))
                    db.execute("DELETE FROM messages WHERE room = ?", (key,))
                    continue
                if keep_from != first:
                    db.execute("UPDATE rooms SET first = ? WHERE key = ?", (keep_from, key))
                    db.execute("DELETE FROM messages WHERE room = ? AND seq < ?", (key, keep_from))
                room = _Room(name, epoch, keep_from, last, self.history_limit)
                room.topic, room.topic_by, room.topic_at = topic, topic_by, topic_at
                self._rooms[key] = room
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        self._next_kept = db.execute("SELECT coalesce(max(id), 0) + 1 FROM kept").fetchone()[0]

    # -- rooms and history (hub side) --------------------------------------

    def rooms(self) -> list[RoomRecord]:
        return [room.record() for room in self._rooms.values()]

    def open_room(self, key: str, name: str) -> RoomRecord:
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = _Room(name, new_epoch(), 1, 0, self.history_limit)
            self._pending.rooms[key] = room
        return room.record()

    def close_room(self, key: str) -> bool:
        room = self._rooms.get(key)
        if room is None:
            return False
        if outlives_members(key, history=room.first <= room.last, topic=room.topic):
            return True
        del self._rooms[key]
        self._pending.rooms.pop(key, None)
        self._pending.reset.add(key)
        return False

    def append(self, key: str, time: int, sender: str, text: str, action: bool) -> int:
        room = self._rooms[key]
        seq = room.last = room.last + 1
        if seq - room.first >= self.history_limit:
            room.first = seq + 1 - self.history_limit
        pending = self._pending
        if self.history_limit:
            room.unwritten.append(Entry(seq, time, sender, text, action))
            pending.messages.append((key, seq, time, sender, text, action))
        pending.rooms[key] = room
        return seq

    def after(self, key: str, seq: int, limit: int) -> list[Entry]:
        room = self._rooms.get(key)
        if room is None or limit <= 0:
            return []
        lo = max(seq + 1, room.first)
        return self._entries(key, room, lo, min(room.last, lo + limit - 1))

    def before(self, key: str, seq: int, limit: int) -> list[Entry]:
        room = self._rooms.get(key)
        if room is None or limit <= 0:
            return []
        hi = room.last if seq <= 0 else min(room.last, seq - 1)
        return self._entries(key, room, max(room.first, hi - limit + 1), hi)

    def _entries(self, key: str, room: _Room, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo`` to ``hi`` (within the room's kept range): the file's
        up to ``committed``, then the unwritten ones (there since they were
        appended: only settling, on this side, removes them)."""
        if lo > hi:
            return []
        committed = room.committed
        found: list[Entry] = []
        if lo <= committed:
            rows = self._read(
                "SELECT seq, time, sender, text, action FROM messages WHERE room = ? AND seq BETWEEN ? AND ? "
                "ORDER BY seq",
                (key, lo, min(hi, committed)),
            )
            found = [Entry(s, t, sender, text, bool(action)) for s, t, sender, text, action in rows]
        if hi > committed:
            unwritten = room.unwritten
            base = unwritten[0].seq
            found.extend(unwritten[i - base] for i in range(max(lo, committed + 1), hi + 1))
        return found

    def set_topic(self, key: str, text: str, by: str, at: int) -> None:
        room = self._rooms[key]
        room.topic, room.topic_by, room.topic_at = text, by, at
        self._pending.rooms[key] = room

    # -- accounts and kept private messages (hub side) ---------------------

    def account(self, key: str) -> Account | None:
        staged = self._accounts.get(key)
        if staged is not None:
            return staged[0]
        rows = self._read("SELECT key, nick, verifier, created FROM accounts WHERE key = ?", (key,))
        return Account(*rows[0]) if rows else None

    def save_account(self, account: Account) -> None:
        self._stage_account(account.key, account)

    def drop_account(self, key: str) -> None:
        self._stage_account(key, None)
        self._take_kept(key)

    def _stage_account(self, key: str, account: Account | None) -> None:
        self._accounts[key] = (account, self._pending.number)
        self._pending.accounts[key] = account

    def keep_private(self, key: str, kept: Kept) -> bool:
        if len(self._kept(key)) >= MAX_KEPT:
            return False
        number = self._next_kept
        self._next_kept += 1
        self._kept_new.setdefault(key, {})[number] = kept
        self._pending.kept_add.append((number, key, kept.sender, kept.text, kept.time))
        return True

    def take_privates(self, key: str) -> list[Kept]:
        return self._take_kept(key)

    def _kept(self, key: str) -> dict[int, Kept]:
        """The messages kept for ``key`` by id: the file's and the staged ones
        (a row committed since it was staged is in both), less those taken."""
        gone = self._kept_gone
        rows = self._read("SELECT id, sender, text, time FROM kept WHERE key = ? ORDER BY id", (key,))
        kept = {number: Kept(sender, text, time) for number, sender, text, time in rows if number not in gone}
        kept.update((number, k) for number, k in self._kept_new.get(key, {}).items() if number not in gone)
        return kept

    def _take_kept(self, key: str) -> list[Kept]:
        kept = self._kept(key)
        self._kept_gone.update(kept)
        self._pending.kept_del.extend(kept)
        return [kept[number] for number in sorted(kept)]

    def _read(self, sql: str, args: tuple[object, ...]) -> list[Any]:
        """One query on the reader connection, every row fetched (a cursor left
        open would hold a read snapshot, and the WAL could not be checkpointed)."""
        if self._reader is None:
            raise StoreFault(f"store {self.path} is closed")
        try:
            return self._reader.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreFault(f"store {self.path}: read failed ({_one_line(exc)})") from None

    # -- staging and writing -----------------------------------------------

    def dirty(self) -> bool:
        return bool(self._pending.messages or len(self._pending))

    def detach(self) -> object | None:
        self._settle()
        batch = self._pending
        if not len(batch):
            return None
        for key, room in batch.rooms.items():
            batch.room_rows.append(room.row(key))
            batch.marks.append((room, room.last))
        batch.rooms = {}
        self._inflight.append(batch)
        self._pending = _Batch(batch.number + 1)
        return batch

    def _settle(self) -> None:
        """Drop from the overlay what the writer has committed (hub side)."""
        done = self._done
        while self._inflight and self._inflight[0].number <= done:
            batch = self._inflight.popleft()
            for room, last in batch.marks:
                room.committed = max(room.committed, last)
                unwritten = room.unwritten
                while unwritten and unwritten[0].seq <= last:
                    unwritten.popleft()
            for key in batch.accounts:
                staged = self._accounts.get(key)
                if staged is not None and staged[1] <= batch.number:
                    del self._accounts[key]
            for number, key, *_ in batch.kept_add:
                box = self._kept_new.get(key)
                if box is not None:
                    box.pop(number, None)
                    if not box:
                        del self._kept_new[key]
            self._kept_gone.difference_update(batch.kept_del)

    def write(self, batch: object) -> None:
        """Commit ``batch``, after any earlier batch whose write failed, in one
        transaction (the writer thread, outside the hub's lock).

        Raises:
            StoreFault: the write failed; the batch is kept and retried first
                by the next ``write``.
        """
        if not isinstance(batch, _Batch):
            raise TypeError(f"not a batch of this store: {batch!r}")
        with self._write_lock:
            self._write(batch)

    def _enqueue(self, batch: _Batch) -> None:
        # Batches come in the order detach made them; one already queued (or
        # written) is not queued twice.
        last = self._backlog[-1].number if self._backlog else self._done
        if batch.number > last:
            self._backlog.append(batch)

    def _write(self, batch: _Batch | None) -> None:
        if batch is not None:
            self._enqueue(batch)
        if not self._backlog:
            return
        db = self._writer
        try:
            if db is None:
                raise sqlite3.ProgrammingError("the store is closed")
            db.execute("BEGIN IMMEDIATE")
            try:
                for each in self._backlog:
                    _write_batch(db, each)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        # OSError: the disk; ValueError, OverflowError: a value SQLite cannot
        # store (a bug upstream), reported the same way rather than killing
        # the writer thread.
        except (sqlite3.Error, OSError, ValueError, OverflowError) as exc:
            count = sum(len(each) for each in self._backlog)
            self._bound_backlog()
            raise StoreFault(
                f"store {self.path}: write failed ({_one_line(exc)}); {count} changes kept to retry with the next write"
            ) from None
        self._done = self._backlog[-1].number
        self._backlog.clear()

    def _bound_backlog(self) -> None:
        """Past ``backlog_limit`` rows, drop the oldest messages (then, if
        that is not enough, the oldest batches whole) and say so once."""
        total = sum(len(each) for each in self._backlog)
        if total <= self.backlog_limit:
            return
        lost = 0
        for each in self._backlog:
            if total <= self.backlog_limit:
                break
            lost += len(each.messages)
            total -= len(each.messages)
            each.messages = []
        lost_other = 0
        while total > self.backlog_limit and len(self._backlog) > 1:
            dropped = self._backlog.popleft()
            lost_other += len(dropped)
            total -= len(dropped)
        log.error(
            "store %s: writes have failed for too long; dropped %d unwritten messages%s to bound memory: they are lost",
            self.path,
            lost,
            f" and {lost_other} other changes" if lost_other else "",
        )

    def close(self) -> None:
        """Write what is staged (one last transaction), checkpoint the WAL into
        the file, close the connections and release the lock. Idempotent.

        Raises:
            StoreFault: the last write failed (the store is released anyway).
        """
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            fault: StoreFault | None = None
            try:
                # Every batch detached and not written yet (the writer thread
                # has stopped, or never got to them), then what is still staged.
                self.detach()
                for batch in self._inflight:
                    self._enqueue(batch)
                self._write(None)
            except StoreFault as exc:
                fault = exc
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._writer is not None and fault is None:
                with contextlib.suppress(sqlite3.Error):
                    self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._release()
            if fault is not None:
                raise fault

    def _release(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        for db in (self._reader, self._writer):
            if db is not None:
                with contextlib.suppress(sqlite3.Error):
                    db.close()
        self._reader = self._writer = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = -1


class _Checkpointer:
    """Copies the WAL back into the database every ``CHECKPOINT_EVERY`` seconds,
    on its own thread and connection. A PASSIVE checkpoint runs beside the
    writer's commits (WAL lets it) instead of inside one of them, so the
    deliveries held for a commit never wait for a checkpoint's copying and
    fsync; the WAL stays bounded by what a second of chat writes."""

    def __init__(self, path: Path) -> None:
        self._db = _connect(path)
        self._stopping = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="twinchat-store-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(CHECKPOINT_EVERY):
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                if not self._failing:
                    log.warning("store: a checkpoint failed (%s); the WAL grows until one succeeds", _one_line(exc))
                self._failing = True
            else:
                if self._failing:
                    log.info("store: checkpoints work again")
                self._failing = False

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()
        self._db.close()


def _write_batch(db: sqlite3.Connection, batch: _Batch) -> None:
    """One batch's statements, inside the caller's transaction. Every insert
    replaces, so a batch written twice (a COMMIT that failed after all) is
    harmless. Empty lists are skipped: a chat's batch is messages and a room
    row, and each statement costs its call even with nothing to do."""
    for key in batch.reset:
        db.execute("DELETE FROM rooms WHERE key = ?", (key,))
        db.execute("DELETE FROM messages WHERE room = ?", (key,))
    if batch.messages:
        db.executemany(
            "INSERT OR REPLACE INTO messages (room, seq, time, sender, text, action) VALUES (?, ?, ?, ?, ?, ?)",
            batch.messages,
        )
    if batch.room_rows:
        db.executemany(
            f"INSERT OR REPLACE INTO rooms ({_ROOM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch.room_rows
        )
        trims = [(row[0], row[3]) for row in batch.room_rows if row[3] > 1]
        if trims:
            db.executemany("DELETE FROM messages WHERE room = ? AND seq < ?", trims)
    if batch.accounts:
        saved = [tuple(account) for account in batch.accounts.values() if account is not None]
        db.executemany("INSERT OR REPLACE INTO accounts (key, nick, verifier, created) VALUES (?, ?, ?, ?)", saved)
        gone = [(key,) for key, account in batch.accounts.items() if account is None]
        db.executemany("DELETE FROM accounts WHERE key = ?", gone)
    if batch.kept_add:
        db.executemany(
            "INSERT OR REPLACE INTO kept (id, key, sender, text, time) VALUES (?, ?, ?, ?, ?)", batch.kept_add
        )
    if batch.kept_del:
        db.executemany("DELETE FROM kept WHERE id = ?", [(number,) for number in batch.kept_del])


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; the writer says BEGIN and
    # COMMIT itself, and every read is its own snapshot.
    return sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)


def _take_lock(lock_path: Path, path: Path) -> int:
    """An exclusive advisory lock beside the database, so that a second server
    on the same data directory stops at once instead of sharing the file."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreFault(
            f"store {path}: cannot create its lock file {lock_path} ({exc.strerror}); "
            "check that the directory exists and is writable"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StoreFault(
            f"store {path} is in use by another twinchat server (lock {lock_path}: {exc.strerror}); "
            "stop that server, or give this one another --data-dir"
        ) from None
    return fd


#: What to do about an error opening the file, by words in SQLite's message.
_OPEN_HINTS: Final = (
    ("not a database", "it is not a SQLite database: move it aside, or choose another --data-dir"),
    ("malformed", "it is corrupt: restore it from a backup, or move it aside to start with an empty store"),
    ("readonly", "it is read-only: make the file and its directory writable"),
    ("locked", "another program holds it locked: stop that program"),
    ("unable to open", "check that its directory exists and is writable"),
)


def _open_fault(path: Path, exc: BaseException) -> StoreFault:
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else _one_line(exc)
    lowered = detail.lower()
    hint = next((hint for words, hint in _OPEN_HINTS if words in lowered), "check the file and its directory")
    return StoreFault(f"store {path}: cannot open ({detail}); {hint}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

"""The Redis store: rooms, their history, accounts and kept private messages in a Redis server.

``RedisStore`` implements ``common.ports.Store`` with the semantics of
``common.chat.log.MemoryStore(keep_rooms=True)`` (its model in the tests), as
``twinchat.store.sqlite.SqliteStore`` does, with the data in Redis instead of
a file (``--redis URL``): the first step of many servers on one Redis (issue 10).

Keys, all under a prefix (``twinchat:`` unless told otherwise):

- ``{p}rooms``: a set of the room keys the store keeps (read at start);
- ``{p}room:{key}``: a hash of the room's ``name``, ``epoch``, ``first``,
  ``last``, ``topic``, ``topic_by``, ``topic_at``;
- ``{p}log:{key}``: the room's history, a *stream* whose entry IDs are
  ``{seq}-0`` (fields ``t`` time, ``s`` sender, ``x`` text, ``a`` action).
  A stream rather than a list because an entry's ID is its seq: ``after`` and
  ``before`` are one ``XRANGE``/``XREVRANGE`` by seq with ``COUNT``, with no
  index arithmetic that a trim (or, with issue 10, another server's append)
  could shift between two calls; ``XTRIM MINID first`` keeps exactly the last
  ``history_limit``; and an entry written twice (a retried batch whose first
  ``EXEC`` did land) is refused by Redis as "equal or smaller than the top
  item" instead of duplicated. Equal field names are stored once per stream
  node (listpack), so an entry costs about what a list element would;
- ``{p}accounts``: a set of the account keys; ``{p}account:{key}``: a hash of
  ``nick``, ``verifier``, ``created``;
- ``{p}kept:{key}``: the private messages kept for ``key``, a list (oldest
  first, capped at ``MAX_KEPT`` by ``LTRIM``) of JSON ``[id, sender, text,
  time]``; the random id makes each value unique, so one is removed by value
  (``LREM``) and a retried ``RPUSH`` replaces rather than duplicates.

Strategy. As in ``SqliteStore`` (read its docstring: the same two sides, the
same overlay, the same settling), the hub calls every method but ``write``
under its lock and must not wait long there: each room's counters live in
memory (loaded at start), changes are *staged* in an overlay that queries see
at once, and ``write`` (the writer thread) sends the retry backlog and the new
batch as one ``MULTI``/``EXEC`` pipeline (each room's new entries one Lua call,
``_APPEND``, in it): one round trip, applied whole.

Reads under the lock (the committed part of a room's history, an account, a
kept-message box) go to Redis on their own connection, with a short socket
timeout and no retries. If Redis does not answer, a query answers from what is
in memory instead and the store stops asking Redis for ``READ_PAUSE`` seconds,
so an outage costs the hub at most one timeout per pause, not one per query;
the first failure and the recovery are logged once each. Degraded answers:
history is the staged (unwritten) entries only, so a joiner sees less, never
something wrong; an account is the last one this store saw (all are loaded at
start), never "not registered" for a registered nick; a kept message is
staged whatever the box holds (the ``LTRIM`` bounds it), and a login takes
only the staged ones, the rest wait in Redis for the next.

Numbering. This store numbers a room's messages itself, as SQLite does: a
room's seq is its in-memory ``last`` plus one, and Redis learns it at
``write``; two of them on one Redis would number over each other. The
servers' ``--redis`` therefore uses ``twinchat.cluster.store.ClusterStore``,
which keeps this store's accounts and kept messages and leaves the rooms to
the bus's scripts (``twinchat.cluster``): numbered in Redis, in one order for
every server.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.chat.log import DEFAULT_HISTORY_LIMIT, new_epoch, outlives_members
from common.ports import Account, Entry, Kept, RoomRecord, StoreFault
from common.wire.limits import MAX_KEPT

log = logging.getLogger("twinchat.store")

T = TypeVar("T")

#: Key prefix unless told otherwise.
DEFAULT_PREFIX: Final = "twinchat:"

#: Seconds a query under the hub lock waits for Redis before it answers from
#: memory: a read takes well under a millisecond on a healthy Redis nearby,
#: and up to this while Redis runs a large ``EXEC`` (a retried backlog).
READ_TIMEOUT: Final = 0.2

#: Seconds after a failed read before queries ask Redis again: a Redis that
#: does not answer at all (a lost host) holds the hub for at most
#: ``READ_TIMEOUT`` in every ``READ_PAUSE`` (10 %); one that refuses at once
#: (stopped) costs nothing.
READ_PAUSE: Final = 2.0

#: Seconds the writer waits for Redis (connect, or one whole batch) before it
#: gives up and keeps the batch to retry.
WRITE_TIMEOUT: Final = 5.0

#: Seconds to reach Redis at start.
CONNECT_TIMEOUT: Final = 2.0

#: Most changes kept for retrying while writes fail; past it the oldest
#: messages are dropped and logged as lost (as ``SqliteStore`` does).
MAX_BACKLOG_ROWS: Final = 100_000

#: What Redis says of an ``XADD`` whose ID it already has: a retried batch
#: whose first ``EXEC`` landed after all. Harmless, and ignored.
_DUPLICATE: Final = "equal or smaller than the target stream top item"

#: Entries one call of ``_APPEND`` adds (its arguments stay a few hundred KiB).
APPEND_CHUNK: Final = 1_000

#: A room's new entries in one call, rather than one ``XADD`` command each:
#: redis-py spends most of a batch's time on each command's packing and reply,
#: so this makes a batch of 1,000 messages several times cheaper to send.
#: An entry Redis has already (a batch sent again) is skipped; any other
#: error is the call's answer. KEYS[1]: the room's stream; ARGV: seq, time,
#: sender, text, action (0 or 1), for each entry.
_APPEND: Final = """
for i = 1, #ARGV, 5 do
    local r = redis.pcall('XADD', KEYS[1], ARGV[i] .. '-0',
        't', ARGV[i + 1], 's', ARGV[i + 2], 'x', ARGV[i + 3], 'a', ARGV[i + 4])
    if type(r) == 'table' and r.err and not string.find(r.err, 'equal or smaller', 1, true) then
        return r
    end
end
return #ARGV / 5
"""

#: What a failed Redis call raises: the client's errors, the socket's, and a
#: value it cannot encode (a bug upstream, reported rather than fatal).
_FAILURES: Final = (redis.RedisError, OSError, ValueError)


class _Room:
    """A room's counters and its entries not yet known to be in Redis."""

    __slots__ = ("committed", "epoch", "first", "last", "name", "topic", "topic_at", "topic_by", "unwritten")

    def __init__(self, name: str, epoch: str, first: int, last: int, limit: int) -> None:
        self.name = name
        self.epoch = epoch
        self.first = first
        self.last = last
        self.topic = ""
        self.topic_by = ""
        self.topic_at = 0
        #: Every seq up to this one is in Redis (or was lost to a full backlog).
        self.committed = last
        #: The entries above ``committed`` (the last ``limit`` of them).
        self.unwritten: deque[Entry] = deque(maxlen=limit)

    def record(self) -> RoomRecord:
        return RoomRecord(self.name, self.epoch, self.first, self.last, self.topic, self.topic_by, self.topic_at)

    def fields(self) -> dict[str, str | int]:
        return {
            "name": self.name,
            "epoch": self.epoch,
            "first": self.first,
            "last": self.last,
            "topic": self.topic,
            "topic_by": self.topic_by,
            "topic_at": self.topic_at,
        }


class _Batch:
    """Changes staged between two ``detach`` calls; opaque to the server."""

    __slots__ = ("accounts", "kept_add", "kept_del", "marks", "messages", "number", "reset", "room_rows", "rooms")

    def __init__(self, number: int) -> None:
        self.number = number
        self.messages: list[tuple[str, Entry]] = []
        #: Rooms changed (hub side, until detach turns them into ``room_rows``).
        self.rooms: dict[str, _Room] = {}
        self.room_rows: list[tuple[str, dict[str, str | int]]] = []
        #: (room, its last seq at detach): what settling this batch prunes.
        self.marks: list[tuple[_Room, int]] = []
        #: Rooms forgotten: their keys go first (a room may be reopened after).
        self.reset: set[str] = set()
        self.accounts: dict[str, Account | None] = {}
        #: (account key, id, JSON value) added and removed.
        self.kept_add: list[tuple[str, str, str]] = []
        self.kept_del: list[tuple[str, str, str]] = []

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


class RedisStore:
    """The store in Redis (``common.ports.Store``).

    Args:
        url: the Redis server, as redis-py takes it (``redis://HOST:PORT/DB``,
            ``rediss://`` for TLS, ``unix:///path``; a password in the URL is
            never logged).
        history_limit: entries kept per room; older ones are trimmed.
        prefix: what every key starts with (several chats on one Redis).

    Raises:
        StoreFault: Redis cannot be reached or used at start (one line, naming
            the server without its password, and what to do).
    """

    #: Rows kept for retrying while writes fail (see ``MAX_BACKLOG_ROWS``).
    backlog_limit: int = MAX_BACKLOG_ROWS

    def __init__(self, url: str, history_limit: int = DEFAULT_HISTORY_LIMIT, *, prefix: str = DEFAULT_PREFIX) -> None:
        if history_limit < 0:
            raise ValueError(f"history_limit must be 0 or more, not {history_limit}")
        self.url = url
        self.where = _redacted(url)
        self.history_limit = history_limit
        self.prefix = prefix
        # Hub side.
        self._rooms: dict[str, _Room] = {}
        #: Staged accounts (None: dropped), with the batch that stages them.
        self._accounts: dict[str, tuple[Account | None, int]] = {}
        #: Every account last seen in Redis or staged: the answer while Redis
        #: does not (loaded at start, so it is every account there is while
        #: this is the only server).
        self._seen: dict[str, Account] = {}
        self._kept_new: dict[str, dict[str, tuple[str, Kept]]] = {}
        self._kept_gone: set[str] = set()
        self._pending = _Batch(1)
        self._inflight: deque[_Batch] = deque()
        self._read_paused_until = 0.0
        self._read_failing = False
        # Writer side.
        self._write_lock = threading.Lock()
        self._backlog: deque[_Batch] = deque()
        self._done = 0
        self._closed = False
        try:
            self._reader = _client(url, READ_TIMEOUT)
            self._writer = _client(url, WRITE_TIMEOUT)
            self._append_script = self._writer.register_script(_APPEND)
        except ValueError as exc:
            raise StoreFault(f"store {self.where}: not a Redis URL ({_one_line(exc)})") from None
        try:
            self._writer.ping()
            self._load()
        except KeyError as exc:
            self._release()
            raise StoreFault(
                f"store {self.where}: a hash under {prefix!r} lacks the field {exc}: not twinchat's data? "
                "Choose another Redis database or prefix"
            ) from None
        except _FAILURES as exc:
            self._release()
            raise StoreFault(
                f"store {self.where}: cannot use Redis ({_one_line(exc)}); "
                "is redis-server running there, and is the URL right?"
            ) from None

    # -- keys ----------------------------------------------------------------

    def _room_key(self, key: str) -> str:
        return f"{self.prefix}room:{key}"

    def _log_key(self, key: str) -> str:
        return f"{self.prefix}log:{key}"

    def _account_key(self, key: str) -> str:
        return f"{self.prefix}account:{key}"

    def _kept_key(self, key: str) -> str:
        return f"{self.prefix}kept:{key}"

    # -- opening -------------------------------------------------------------

    def _load(self) -> None:
        """Read the rooms and accounts; forget rooms with neither history nor
        a topic (their members left when the server stopped) and trim each
        room's history to ``history_limit``, in one transaction."""
        db = self._writer
        keys = sorted(db.smembers(f"{self.prefix}rooms"))
        read = db.pipeline(transaction=False)
        for key in keys:
            read.hgetall(self._room_key(key))
        rows = read.execute()
        fix = db.pipeline(transaction=True)
        for key, row in zip(keys, rows, strict=True):
            if not row:
                fix.srem(f"{self.prefix}rooms", key)
                continue
            first, last, topic = int(row["first"]), int(row["last"]), row["topic"]
            keep_from = max(first, last + 1 - self.history_limit)
            if not outlives_members(key, history=keep_from <= last, topic=topic):
                fix.srem(f"{self.prefix}rooms", key)
                fix.delete(self._room_key(key), self._log_key(key))
                continue
            if keep_from != first:
                fix.hset(self._room_key(key), "first", keep_from)
                fix.xtrim(self._log_key(key), minid=f"{keep_from}-0", approximate=False)
            room = _Room(row["name"], row["epoch"], keep_from, last, self.history_limit)
            room.topic, room.topic_by, room.topic_at = topic, row["topic_by"], int(row["topic_at"])
            self._rooms[key] = room
        fix.execute()
        self._load_accounts()

    def _load_accounts(self) -> None:
        """Read every account (the answer while Redis does not)."""
        db = self._writer
        accounts = sorted(db.smembers(f"{self.prefix}accounts"))
        read = db.pipeline(transaction=False)
        for key in accounts:
            read.hgetall(self._account_key(key))
        for key, row in zip(accounts, read.execute(), strict=True):
            account = _account(key, row)
            if account is not None:
                self._seen[key] = account

    # -- reads under the hub lock --------------------------------------------

    def _read(self, query: Callable[[Any], T], fallback: T) -> T:
        """``query`` on the reader connection, or ``fallback`` if Redis fails
        to answer (then Redis is left alone for ``READ_PAUSE`` seconds)."""
        now = time.monotonic()
        if now < self._read_paused_until:
            return fallback
        try:
            answer = query(self._reader)
        # KeyError, TypeError: a value not as this store writes it (another
        # program's), answered as Redis failing rather than as a traceback.
        except (*_FAILURES, KeyError, TypeError) as exc:
            self._read_paused_until = now + READ_PAUSE
            if not self._read_failing:
                self._read_failing = True
                log.error(
                    "store %s: reads failed (%s); answering from memory (staged changes, accounts seen) "
                    "until Redis answers again",
                    self.where,
                    _one_line(exc),
                )
            return fallback
        if self._read_failing:
            self._read_failing = False
            log.warning("store %s: reads answered again", self.where)
        return answer

    # -- rooms and history (hub side) ----------------------------------------

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
            entry = Entry(seq, time, sender, text, action)
            room.unwritten.append(entry)
            pending.messages.append((key, entry))
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
        """Entries ``lo`` to ``hi`` (within the room's kept range): Redis's up
        to ``committed``, then the unwritten ones."""
        if lo > hi:
            return []
        committed = room.committed
        found: list[Entry] = []
        if lo <= committed:
            top = min(hi, committed)
            log_key = self._log_key(key)
            found = self._read(
                lambda db: _entries(db.xrange(log_key, f"{lo}-0", f"{top}-0", count=top - lo + 1)), found
            )
        if hi > committed:
            unwritten = room.unwritten
            base = unwritten[0].seq
            found.extend(unwritten[i - base] for i in range(max(lo, committed + 1), hi + 1))
        return found

    def set_topic(self, key: str, text: str, by: str, at: int) -> None:
        room = self._rooms[key]
        room.topic, room.topic_by, room.topic_at = text, by, at
        self._pending.rooms[key] = room

    # -- accounts and kept private messages (hub side) -----------------------

    def account(self, key: str) -> Account | None:
        staged = self._accounts.get(key)
        if staged is not None:
            return staged[0]
        name = self._account_key(key)
        found = self._read(lambda db: _account(key, db.hgetall(name)), self._seen.get(key))
        if found is None:
            self._seen.pop(key, None)  # no memory of every nick ever asked about
        else:
            self._seen[key] = found
        return found

    def save_account(self, account: Account) -> None:
        self._stage_account(account.key, account)

    def drop_account(self, key: str) -> None:
        self._stage_account(key, None)
        self._take_kept(key)

    def _stage_account(self, key: str, account: Account | None) -> None:
        self._accounts[key] = (account, self._pending.number)
        self._pending.accounts[key] = account
        if account is None:
            self._seen.pop(key, None)
        else:
            self._seen[key] = account

    def keep_private(self, key: str, kept: Kept) -> bool:
        if len(self._kept(key)) >= MAX_KEPT:
            return False
        number = secrets.token_hex(8)
        value = json.dumps([number, kept.sender, kept.text, kept.time])
        self._kept_new.setdefault(key, {})[number] = (value, kept)
        self._pending.kept_add.append((key, number, value))
        return True

    def take_privates(self, key: str) -> list[Kept]:
        return self._take_kept(key)

    def _kept(self, key: str) -> dict[str, tuple[str, Kept]]:
        """The messages kept for ``key`` by id, oldest first: Redis's and the
        staged ones (one written since it was staged is in both), less those
        taken. Without Redis, the staged ones only."""
        gone = self._kept_gone
        name = self._kept_key(key)
        nothing: list[tuple[str, tuple[str, Kept]]] = []
        stored = self._read(lambda db: [(value, _parse_kept(value)) for value in db.lrange(name, 0, -1)], nothing)
        kept = {number: (value, message) for value, (number, message) in stored if number not in gone}
        kept.update((n, staged) for n, staged in self._kept_new.get(key, {}).items() if n not in gone)
        return kept

    def _take_kept(self, key: str) -> list[Kept]:
        kept = self._kept(key)
        self._kept_gone.update(kept)
        self._pending.kept_del.extend((key, number, value) for number, (value, _) in kept.items())
        return [message for _, message in kept.values()]

    # -- staging and writing -------------------------------------------------

    def dirty(self) -> bool:
        return bool(self._pending.messages or len(self._pending))

    def detach(self) -> object | None:
        self._settle()
        batch = self._pending
        if not len(batch):
            return None
        for key, room in batch.rooms.items():
            batch.room_rows.append((key, room.fields()))
            batch.marks.append((room, room.last))
        batch.rooms = {}
        self._inflight.append(batch)
        self._pending = _Batch(batch.number + 1)
        return batch

    def _settle(self) -> None:
        """Drop from the overlay what the writer has sent (hub side)."""
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
            for key, number, _ in batch.kept_add:
                box = self._kept_new.get(key)
                if box is not None:
                    box.pop(number, None)
                    if not box:
                        del self._kept_new[key]
            self._kept_gone.difference_update(number for _, number, _ in batch.kept_del)

    def write(self, batch: object) -> None:
        """Send ``batch``, after any earlier batch whose write failed, as one
        ``MULTI``/``EXEC`` (the writer thread, outside the hub's lock).

        Raises:
            StoreFault: the write failed; the batch is kept and retried first
                by the next ``write``.
        """
        if not isinstance(batch, _Batch):
            raise TypeError(f"not a batch of this store: {batch!r}")
        with self._write_lock:
            self._write(batch)

    def _enqueue(self, batch: _Batch) -> None:
        last = self._backlog[-1].number if self._backlog else self._done
        if batch.number > last:
            self._backlog.append(batch)

    def _write(self, batch: _Batch | None) -> None:
        if batch is not None:
            self._enqueue(batch)
        if not self._backlog:
            return
        try:
            if self._closed and batch is not None:
                raise redis.ConnectionError("the store is closed")
            pipe = self._writer.pipeline(transaction=True)
            for each in self._backlog:
                self._queue_batch(pipe, each)
            failures = [
                r for r in pipe.execute(raise_on_error=False) if isinstance(r, Exception) and _DUPLICATE not in str(r)
            ]
            if failures:
                raise failures[0]
        except _FAILURES as exc:
            count = sum(len(each) for each in self._backlog)
            self._bound_backlog()
            raise StoreFault(
                f"store {self.where}: write failed ({_one_line(exc)}); "
                f"{count} changes kept to retry with the next write"
            ) from None
        self._done = self._backlog[-1].number
        self._backlog.clear()

    def _queue_batch(self, pipe: Any, batch: _Batch) -> None:
        """One batch's commands, in the caller's transaction. Each is
        idempotent, so a batch sent twice (an ``EXEC`` whose reply was lost)
        is harmless."""
        p = self.prefix
        for key in batch.reset:
            pipe.srem(f"{p}rooms", key)
            pipe.delete(self._room_key(key), self._log_key(key))
        by_room: dict[str, list[str | int]] = {}
        for key, e in batch.messages:
            by_room.setdefault(key, []).extend((e.seq, e.time, e.sender, e.text, int(e.action)))
        step = 5 * APPEND_CHUNK
        for key, args in by_room.items():
            for start in range(0, len(args), step):
                self._append_script(keys=[self._log_key(key)], args=args[start : start + step], client=pipe)
        for key, fields in batch.room_rows:
            pipe.hset(self._room_key(key), mapping=fields)
            pipe.sadd(f"{p}rooms", key)
            pipe.xtrim(self._log_key(key), minid=f"{fields['first']}-0", approximate=False)
        for key, account in batch.accounts.items():
            if account is None:
                pipe.srem(f"{p}accounts", key)
                pipe.delete(self._account_key(key))
            else:
                pipe.hset(
                    self._account_key(key),
                    mapping={"nick": account.nick, "verifier": account.verifier, "created": account.created},
                )
                pipe.sadd(f"{p}accounts", key)
        for key, _, value in batch.kept_add:
            pipe.lrem(self._kept_key(key), 0, value)
            pipe.rpush(self._kept_key(key), value)
            pipe.ltrim(self._kept_key(key), 0, MAX_KEPT - 1)
        for key, _, value in batch.kept_del:
            pipe.lrem(self._kept_key(key), 0, value)

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
            self.where,
            lost,
            f" and {lost_other} other changes" if lost_other else "",
        )

    def close(self) -> None:
        """Write what is staged and disconnect. Idempotent.

        Raises:
            StoreFault: the last write failed (the store is released anyway).
        """
        with self._write_lock:
            if self._closed:
                return
            fault: StoreFault | None = None
            try:
                self.detach()
                for batch in self._inflight:
                    self._enqueue(batch)
                self._write(None)
            except StoreFault as exc:
                fault = exc
            self._closed = True
            self._release()
            if fault is not None:
                raise fault

    def _release(self) -> None:
        for db in (getattr(self, "_reader", None), getattr(self, "_writer", None)):
            if db is not None:
                db.close()


def _client(url: str, timeout: float) -> Any:
    """A client that answers within ``timeout`` or fails: no retries (the
    writer's retry is the backlog; a query's is the next query). Typed Any:
    with ``decode_responses`` every reply is a str, which redis-py's types
    (``bytes | str``) cannot say."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, CONNECT_TIMEOUT),
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
        # RESP2, which every Redis speaks; redis-py's RESP3 handshake also
        # compares bytes with str, which ``python -bb`` (the tests) refuses.
        protocol=2,
    )


def _entries(rows: Iterable[tuple[str, dict[str, str]]]) -> list[Entry]:
    return [Entry(int(ident.partition("-")[0]), int(f["t"]), f["s"], f["x"], f["a"] == "1") for ident, f in rows]


def _parse_kept(value: str) -> tuple[str, Kept]:
    number, sender, text, at = json.loads(value)
    return number, Kept(sender, text, at)


def _account(key: str, row: dict[str, str]) -> Account | None:
    return Account(key, row["nick"], row["verifier"], int(row["created"])) if row else None


def _redacted(url: str) -> str:
    """The URL without its password, for logs and faults."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{parts.username}@{host}" if parts.username else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(a malformed URL)"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__

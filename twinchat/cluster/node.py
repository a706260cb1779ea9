"""One server's part in a chat of many: the bus, the nick table and presence in Redis.

``Cluster`` is the edge behind three of the core's ports (``common.ports``):
``Bus`` (room events), ``NickOwners`` (``RedisNicks``) and ``Presence``
(``RedisPresence``). It owns every socket to Redis and the threads that use
them; the hub only ever records what is to be sent, and is handed what came
back, under its lock.

Strategy (the order of a room comes from Redis, its delivery from the bus,
as in Centrifugo's Redis engine):

- **Publishing.** ``publish`` (hub lock held) appends to an outbox (bounded:
  past ``MAX_OUTBOX`` the bus is not ready) and wakes the writer thread,
  which sends everything waiting as one pipeline (one round trip, however
  many events). A run of one room's messages is one ``scripts.SAYS`` call:
  it numbers them (``HINCRBY``), adds them to the room's stream (``XADD``
  with the history limit as ``MAXLEN``), and publishes them as one payload,
  atomically; a notice is one ``scripts.POST`` call, which also keeps who
  is where. A call that fails is reported to its sender (``Hub.unsent``):
  nothing is dropped in silence.
- **Delivering.** One listener thread per server (a redis-py ``PubSub``
  belongs to one thread) reads the channels and hands each event to the hub
  under its lock; the hub delivers it to its own members of the room, in
  the order Redis gave (one subscription: Redis pushes what it publishes to
  it in the order it ran, across channels). Notices go on one channel every
  server follows; a room's messages on the room's own, which a server
  follows while it has members in the room (``Bus.follow``: the writer wakes
  the listener through the server's own channel, the listener subscribes,
  and once Redis confirms, catches the room up from its stream, so nothing
  said while it subscribed is missed). Events are read in runs and a run is handed over
  under one lock. If an event's numbers jump past what a room's members
  here were given (the listener reconnected), the missing messages are read
  from the stream outside the lock first (``Hub.missing``, ``Hub.filled``).
- **Faults.** Either thread failing marks the bus down: ``ready`` is False,
  the hub refuses new room events with ``STORE_FAILED``, connected members
  stay. The listener reconnects with backoff, catches up every room from the
  stream (``Hub.watched``), and the bus is ready again once the heartbeat
  also gets through.
- **Heartbeat.** A thread renews ``alive:{server}`` (a key with a TTL) every
  third of the TTL, and looks for servers of the chat whose key expired: the
  first to run ``scripts.REAP`` on one removes its members everywhere and
  publishes their leave notices; the others find nothing left to do. A
  server that stops does the same for itself. A server that finds it was
  reaped (it was cut off longer than its heartbeat) says again who is here.
- **Questions.** /who, /names and /rooms about every server, and whether
  someone holds the nick a private message is for, are asked by the writer
  in its pipeline too, and answered under the lock afterwards
  (``Hub.answered``, ``Hub.offline``): never a wait under the lock.

Two things do wait for Redis under the hub lock, one short round trip each
with a short timeout (``READ_TIMEOUT``), never on the message path: taking a
nick (registration, /nick: its answer decides the reply) and opening a room
for the first member here or a resume (its numbering decides the replay);
the store's reads of history and accounts are as in ``RedisStore``.

Limits, as built: every server decodes every room's notices (joins, parts,
leaves, renames, topics, private messages), wherever its members are; only
messages follow a server's own rooms. The scripts build their keys from the prefix
rather than declare them, which suits one Redis, not Redis Cluster; the
events a server's listener missed while it reconnected are filled from the
streams only for messages (notices are not stored); an event that reaches
the others carries its sender's clock, the order is Redis's.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any, Final, Generic, NamedTuple, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from common.chat import events as ev
from common.chat.hub import Delivery, Hub
from common.chat.log import new_epoch
from common.chat.rooms import room_key
from common.ports import Entry, Posted, Question
from twinchat.cluster import codec, scripts
from twinchat.store.redis import DEFAULT_PREFIX, READ_PAUSE, READ_TIMEOUT, WRITE_TIMEOUT, _client, _one_line

log = logging.getLogger("twinchat.cluster")

C = TypeVar("C", bound=Hashable)

#: Seconds a server's heartbeat lives unless renewed (``--heartbeat``): a
#: server killed outright has its members removed, with leave notices, at
#: most this long plus a third of it later.
DEFAULT_HEARTBEAT: Final = 9.0

#: Seconds the listener waits at first, and at most, before reconnecting.
BACKOFF_FIRST: Final = 0.1
BACKOFF_MOST: Final = 2.0

#: Seconds the listener waits for the channel before it looks whether it is stopping.
POLL: Final = 0.5

#: Most events the listener hands the hub under one taking of the lock.
RUN: Final = 512

#: Most events waiting for the writer before new ones are refused (a Redis
#: slower than the members: the queue is bounded, as every queue here is).
MAX_OUTBOX: Final = 50_000

#: Most messages read from a stream at once to fill a jump or catch up.
FILL_CHUNK: Final = 1000

#: What a failing call to Redis raises.
FAILURES: Final = (redis.RedisError, OSError)

#: What ``scripts.POST`` answers for a private message to a nick nobody holds.
_OFFLINE: Final = -1

#: Which ``scripts.POST`` operation each kind of notice is (messages: ``scripts.SAYS``).
_OPS: Final[dict[type[ev.ServerEvent], str]] = {
    ev.Joined: "join",
    ev.Parted: "part",
    ev.Left: "part",
    ev.Renamed: "rename",
    ev.Topic: "topic",
    ev.Private: "tell",
}

#: Post deliveries (hub lock held): the shared hub's, which holds them for the store's writes.
Post = Callable[[list[Delivery[Any]]], None]


class _Question(NamedTuple):
    """A member's question about every server, for the writer to ask Redis."""

    origin: int
    question: Question


class _Wake:
    """For the writer: publish on this server's own channel, so that its
    listener looks at the rooms it is to follow now."""


_WAKE: Final = _Wake()


class _Lost(Exception):
    """What became of a batch whose link to Redis broke: not known."""


class _Release(NamedTuple):
    """A nick given up, for the writer to remove from Redis."""

    key: str
    value: str


class Cluster:
    """This server's link to the others through one Redis; see the module docstring.

    Args:
        url: the Redis server.
        history_limit: messages kept per room (each stream's ``MAXLEN``).
        prefix: what every key starts with (the store's).
        heartbeat: seconds this server is taken for alive without a heartbeat.

    Raises:
        redis.RedisError, OSError: Redis cannot be reached (the store,
            opened first, has said so in one line already).
    """

    def __init__(
        self,
        url: str,
        history_limit: int,
        *,
        prefix: str = DEFAULT_PREFIX,
        heartbeat: float = DEFAULT_HEARTBEAT,
    ) -> None:
        self.server = secrets.token_hex(4)
        self.prefix = prefix
        self.history_limit = history_limit
        self.heartbeat = heartbeat
        self.channel = f"{prefix}bus"  # every room's notices
        self.control = f"{prefix}bus@{self.server}"  # this server's own: a wake-up
        self._room_channels = f"{prefix}bus:"  # and the room's key: its messages
        self._sync = _client(url, READ_TIMEOUT)  # under the hub lock
        self._writer = _client(url, WRITE_TIMEOUT)
        self._beater = _client(url, WRITE_TIMEOUT)
        self._fetcher = _client(url, WRITE_TIMEOUT)  # the listener's reads of streams
        # Bytes, not text: whatever is published on the channel reaches the
        # codec, which refuses what is not a room event (not UTF-8 included).
        self._listen: Any = redis.Redis.from_url(
            url,
            socket_timeout=WRITE_TIMEOUT,
            socket_connect_timeout=READ_TIMEOUT * 10,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
            protocol=2,
        )
        self._post_script = self._writer.register_script(scripts.POST)
        self._says_script = self._writer.register_script(scripts.SAYS)
        self._release_script = self._writer.register_script(scripts.RELEASE)
        self._open_script = self._sync.register_script(scripts.OPEN_ROOM)
        self._claim_script = self._sync.register_script(scripts.CLAIM)
        self._rooms_script = self._writer.register_script(scripts.ROOMS)
        self._reap_script = self._beater.register_script(scripts.REAP)
        self._hub: Hub[Any] | None = None
        self._lock = threading.Lock()  # replaced by the hub lock at start
        self._post: Post = lambda deliveries: None
        self._outbox: list[Posted | _Release | _Question | _Wake] = []
        self._following: set[str] = set()  # rooms with members here (under _wake's lock)
        #: Messages (and actions) this server's listener has taken from Redis:
        #: those of the rooms it has members in, not every room's (figures, tests).
        self.messages_heard = 0
        #: The rooms whose channel Redis has confirmed this listener follows.
        self.followed: set[str] = set()
        self._wake = threading.Condition()  # its own lock: taken under the hub lock, never the other way
        self._stop = threading.Event()
        self._listening = False
        self._beating = False
        self._down_logged = False
        self._changed = threading.Condition()  # notified when readiness may have changed
        self._read_paused_until = 0.0
        self._threads: list[threading.Thread] = []
        self.nicks: RedisNicks[Any] = RedisNicks(self)
        self.presence = RedisPresence(self)
        self._subscribed = threading.Event()
        self._back_since = -self.heartbeat  # when the heartbeat got through after failing
        try:
            self._beat()  # joined the chat: a server that cannot is refused at start
        except BaseException:
            self._disconnect()
            raise
        self._beating = True

    # -- the Bus port (hub lock held) ------------------------------------------

    def ready(self) -> bool:
        # Past MAX_OUTBOX waiting, Redis is behind what the members say: refuse
        # rather than hold an ever longer queue in memory.
        return self._listening and self._beating and len(self._outbox) < MAX_OUTBOX

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the bus is ready (or ``timeout`` seconds); whether it is."""
        with self._changed:
            return self._changed.wait_for(self.ready, timeout)

    def publish(self, posted: Posted) -> None:
        with self._wake:
            self._outbox.append(posted)
            self._wake.notify()

    def follow(self, key: str) -> None:
        with self._wake:
            self._following.add(key)
            self._outbox.append(_WAKE)
            self._wake.notify()

    def unfollow(self, key: str) -> None:
        with self._wake:
            self._following.discard(key)
            self._outbox.append(_WAKE)
            self._wake.notify()

    # -- life -------------------------------------------------------------------

    def start(self, hub: Hub[Any], lock: threading.Lock, post: Post) -> None:
        """Start delivering to ``hub`` (whose lock is ``lock``) through ``post``."""
        self._hub, self._lock, self._post = hub, lock, post
        for name, target in (("writer", self._write_loop), ("listener", self._listen_loop), ("heart", self._beat_loop)):
            thread = threading.Thread(target=target, name=f"twinchat-cluster-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        # Ready once it listens: a member who registers at once is not refused.
        self._subscribed.wait(WRITE_TIMEOUT)

    def close(self) -> None:
        """Send what is waiting, leave the chat (the others are told this
        server's members left), stop the threads. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(WRITE_TIMEOUT * 2)
        try:
            self._beater.delete(self._key("alive", self.server))
            self._reap_script(args=[self.prefix, self.server, "the server stopped", "1"], client=self._beater)
        except FAILURES as exc:
            log.warning("cluster: could not tell the others this server stopped (%s)", _one_line(exc))
        self._disconnect()

    def _disconnect(self) -> None:
        for db in (self._sync, self._writer, self._beater, self._fetcher, self._listen):
            db.close()

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    def _down(self, what: str, exc: BaseException) -> None:
        with self._changed:
            self._changed.notify_all()
        if not self._down_logged:
            self._down_logged = True
            log.error(
                "cluster: %s failed (%s); room events are refused until Redis answers again", what, _one_line(exc)
            )

    def _up(self) -> None:
        with self._changed:
            self._changed.notify_all()
        if self.ready() and self._down_logged:
            self._down_logged = False
            log.warning("cluster: Redis answers again; room events are accepted")

    # -- the writer --------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._wake:
                while not self._outbox and not self._stop.is_set():
                    self._wake.wait()
                batch, self._outbox = self._outbox, []
            if batch:
                try:
                    self._write(batch)
                except Exception:  # a bug: say so, and keep the writer alive for the next batch
                    log.exception("cluster: a batch of %d event(s) could not be sent", len(batch))
            elif self._stop.is_set():
                return

    def _write(self, batch: list[Posted | _Release | _Question | _Wake]) -> None:
        """Send a batch as one pipeline; then, under the hub lock, answer its
        questions and tell the senders of what Redis did not take."""
        results = self._send(batch)
        refused = [r for r in results if isinstance(r, Exception)]
        if refused and self._beating:  # Redis answered, and refused some (a room it lost)
            log.error("cluster: Redis refused %d event(s): %s", len(refused), _one_line(refused[0]))
        if refused or any(isinstance(i, _Question) or (isinstance(i, Posted) and i.to) for i in batch):
            with self._lock:
                out = self._settle(batch, results)
                if out:
                    self._post(out)

    def _send(self, batch: list[Posted | _Release | _Question | _Wake]) -> list[Any]:
        """One pipeline for the whole batch; the answer for each item. A run
        of messages of one room is one call (``scripts.SAYS``): under load,
        one round trip numbers, stores and publishes hundreds."""
        pipe = self._writer.pipeline(transaction=False)
        calls: list[int] = []  # items each call stands for
        start = 0
        while start < len(batch):
            item = batch[start]
            size = 1
            if isinstance(item, _Wake):
                pipe.publish(self.control, b"")
            elif isinstance(item, _Release):
                self._release_script(args=[self.prefix, self.server, item.key, item.value], client=pipe)
            elif isinstance(item, _Question):
                self._queue_question(pipe, item.question)
            elif isinstance(item.event, ev.Message | ev.Action):
                run = _run_of_messages(batch, start)
                self._says_script(args=self._says_args(run), client=pipe)
                size = len(run)
            else:
                self._post_script(args=self._post_args(item), client=pipe)
            calls.append(size)
            start += size
        try:
            answers: list[Any] = pipe.execute(raise_on_error=False)
        except FAILURES as exc:
            self._beating = False  # until the heartbeat gets through again
            self._down("publishing", exc)
            # Redis may have run some of it before the link broke: say so.
            answers = [_Lost(f"may not have been sent: {_one_line(exc)}")] * len(calls)
        return [answer for answer, size in zip(answers, calls, strict=True) for _ in range(size)]

    def _says_args(self, run: list[Posted]) -> list[str | int]:
        args: list[str | int] = [self.prefix, run[0].rooms[0], self.history_limit, codec.bodies(run, self.server)]
        for posted in run:
            event = posted.event
            assert isinstance(event, ev.Message | ev.Action)
            args += (event.time, event.sender, event.text, int(isinstance(event, ev.Action)))
        return args

    def _settle(self, batch: list[Posted | _Release | _Question | _Wake], results: list[Any]) -> list[Delivery[Any]]:
        """What the hub makes of a sent batch's answers (hub lock held)."""
        hub = self._hub
        assert hub is not None
        out: list[Delivery[Any]] = []
        for item, result in zip(batch, results, strict=True):
            if isinstance(item, _Question):
                answer = None if isinstance(result, Exception) else _answer(item.question, result)
                out += hub.answered(item.origin, item.question, answer)
            elif not isinstance(item, Posted):
                continue
            elif isinstance(result, _Lost):
                out += hub.unsent(item, str(result))
            elif isinstance(result, Exception):  # Redis answered: it refused this one
                out += hub.unsent(item, f"not sent: {_one_line(result)}")
            elif item.to and result == _OFFLINE:
                out += hub.offline(item)
        return out

    def _queue_question(self, pipe: Any, question: Question) -> None:
        if isinstance(question, ev.Who):
            pipe.hvals(f"{self.prefix}nicks")
        elif isinstance(question, ev.Names):
            pipe.hvals(self._key("names", room_key(question.room)))
        else:
            self._rooms_script(args=[self.prefix], client=pipe)

    def ask(self, origin: int, question: Question) -> bool:
        """The ``Presence`` port's: sent by the writer, answered through ``Hub.answered``."""
        if not self.ready():
            return False
        with self._wake:
            self._outbox.append(_Question(origin, question))
            self._wake.notify()
        return True

    def _post_args(self, posted: Posted) -> list[str | int]:
        event = posted.event
        op = _OPS[type(event)]
        fields: tuple[str | int, ...]
        if isinstance(event, ev.Joined):
            fields = (event.nick, "", "", "")
        elif isinstance(event, ev.Renamed):
            fields = (event.new, "", "", "")
        elif isinstance(event, ev.Topic):
            fields = (event.text, event.setter if event.text else "", event.time if event.text else 0, "")
        elif isinstance(event, ev.Private):
            fields = (posted.to, "", "", "")
        else:
            fields = ("", "", "", "")
        body = codec.body(posted, self.server)
        member = codec.origin(self.server, posted.origin) or f"{self.server}|0"
        return [self.prefix, op, body, member, self.history_limit, *fields, *posted.rooms]

    # -- the listener ------------------------------------------------------------

    def _listen_loop(self) -> None:
        wait = BACKOFF_FIRST
        while not self._stop.is_set():
            pubsub = self._listen.pubsub()
            try:
                pubsub.subscribe(self.channel, self.control)
                live: set[str] = set()  # rooms this subscription follows (asked of Redis)
                with self._changed:
                    self.followed.clear()
                self._follow_rooms(pubsub, live)
                self._listening = True
                self._subscribed.set()
                self._up()
                wait = BACKOFF_FIRST
                while not self._stop.is_set():
                    self._listen_once(pubsub, live)
            except Exception as exc:  # Redis failing, or a bug: either way, start over after a while
                if not isinstance(exc, FAILURES):
                    log.exception("cluster: delivering from the bus failed; listening again")
                self._listening = False
                self._down("listening", exc)
                self._stop.wait(wait)
                wait = min(wait * 2, BACKOFF_MOST)
            finally:
                with contextlib.suppress(*FAILURES):
                    pubsub.close()

    def _listen_once(self, pubsub: Any, live: set[str]) -> None:
        """Wait for the channels, then take what came in runs: events to the
        hub, a run under one taking of the lock; a wake-up, or a room's
        subscription confirmed, in their place among them."""
        message = pubsub.get_message(timeout=POLL)
        if message is None:
            self._follow_rooms(pubsub, live)
            return
        run: list[Any] = []
        while message is not None:
            channel = message["channel"].decode("utf-8", "replace")
            if message["type"] == "message" and channel != self.control:
                run.append(message["data"])
            else:
                if run:
                    self._dispatch(run)
                    run = []
                if message["type"] == "message":  # a wake-up: rooms to follow or leave
                    self._follow_rooms(pubsub, live)
                elif channel.startswith(self._room_channels):
                    self._confirmed(message["type"], channel[len(self._room_channels) :])
            message = pubsub.get_message(timeout=0) if len(run) < RUN else None
        if run:
            self._dispatch(run)

    def _confirmed(self, kind: str, key: str) -> None:
        """Redis confirms it (un)subscribed this listener to a room's channel."""
        with self._changed:
            if kind == "subscribe":
                self.followed.add(key)
            else:
                self.followed.discard(key)
            self._changed.notify_all()
        if kind == "subscribe":
            # From now on the room's messages come here: catch up what was
            # published before, from its stream.
            self._catch_up([key])

    def wait_followed(self, done: Callable[[set[str]], bool], timeout: float) -> bool:
        """Wait until ``done(followed)`` (or ``timeout`` seconds); whether it is."""
        with self._changed:
            return self._changed.wait_for(lambda: done(self.followed), timeout)

    def _follow_rooms(self, pubsub: Any, live: set[str]) -> None:
        """Subscribe to the rooms with members here that this subscription
        does not follow yet, and leave those without (the listener's thread)."""
        with self._wake:
            wanted = set(self._following)
        new, gone = wanted - live, live - wanted
        if new:
            pubsub.subscribe(*(self._room_channels + key for key in sorted(new)))
        if gone:
            pubsub.unsubscribe(*(self._room_channels + key for key in sorted(gone)))
        live.symmetric_difference_update(new | gone)

    def _dispatch(self, payloads: list[Any]) -> None:
        """Hand a run of events to the hub under one taking of the lock; from
        the first that needs filling on, one at a time (``_fill_then``)."""
        items: list[Posted] = []
        for payload in payloads:
            try:
                items += codec.decode(payload, self.server)
            except codec.BadPayload as exc:
                log.warning("cluster: dropped a payload on %s: %s", self.channel, exc)
        self.messages_heard += sum(isinstance(p.event, ev.Message | ev.Action) for p in items)
        hub = self._hub
        assert hub is not None
        done = 0
        with self._lock:
            out: list[Delivery[Any]] = []
            for posted in items:
                if hub.missing(posted):
                    break
                out += hub.arrived(posted)
                done += 1
            if out:
                self._post(out)
        for posted in items[done:]:
            self._fill_then(posted)

    def _fill_then(self, posted: Posted) -> None:
        hub = self._hub
        assert hub is not None
        with self._lock:
            need = hub.missing(posted)
        fetched = [(key, self._fetch(key, first, last)) for key, first, last in need]
        with self._lock:
            out = [d for key, entries in fetched for d in hub.filled(key, entries)]
            out += hub.arrived(posted)
            if out:
                self._post(out)

    def _catch_up(self, keys: list[str]) -> None:
        """Rooms ``keys``, if they have members here, filled from their
        streams up to now."""
        hub = self._hub
        assert hub is not None
        with self._lock:
            watched = [(key, seen) for key, seen in hub.watched() if key in keys]
        fetched = [(key, self._fetch(key, seen + 1, 0)) for key, seen in watched]
        with self._lock:
            out = [d for key, entries in fetched for d in hub.filled(key, entries)]
            if out:
                self._post(out)

    def _fetch(self, key: str, first: int, last: int) -> list[Entry]:
        """Messages ``first`` to ``last`` (0: the newest) of room ``key``'s
        stream, read ``FILL_CHUNK`` at a time: at most the history kept."""
        top = f"{last}-0" if last else "+"
        out: list[Entry] = []
        for _ in range(self.history_limit // FILL_CHUNK + 1):
            rows = self._fetcher.xrange(self._key("log", key), f"{first}-0", top, count=FILL_CHUNK)
            out += [Entry(int(i.partition("-")[0]), int(f["t"]), f["s"], f["x"], f["a"] == "1") for i, f in rows]
            if len(rows) < FILL_CHUNK:
                break
            first = out[-1].seq + 1
        return out

    # -- the heartbeat -----------------------------------------------------------

    def _beat(self) -> None:
        """Renew this server's heartbeat, and clean up after servers whose expired.

        A server that was cut off from Redis longer than a heartbeat comes
        back to find itself reaped by another (its members removed, the
        others told they left): it says again who is here (``_rejoin``). And
        it reaps no one until it has been back a whole heartbeat, since the
        others' keys may have lapsed in the same outage and they are renewing
        them as it is."""
        db = self._beater
        pipe = db.pipeline(transaction=False)
        pipe.set(self._key("alive", self.server), int(time.time()), px=int(self.heartbeat * 1000))
        pipe.sadd(f"{self.prefix}servers", self.server)
        pipe.smembers(f"{self.prefix}servers")
        _, added, servers = pipe.execute()
        now = time.monotonic()
        if not self._beating:
            self._back_since = now
        if added and self._hub is not None:
            self._rejoin()
        if now - self._back_since < self.heartbeat:
            return
        for other in sorted(servers):
            if other != self.server and not db.exists(self._key("alive", other)):
                gone = self._reap_script(args=[self.prefix, other, "the server was lost", "0"], client=db)
                if gone:
                    log.warning("cluster: server %s was lost; %d member(s) removed", other, gone)

    def _rejoin(self) -> None:
        """Claim this server's nicks again and publish a join of each room
        for each member: the others learn they are here after all."""
        assert self._hub is not None
        with self._lock:
            present = self._hub.present()
            held = self.nicks.held()
            watched = self._hub.watched()
        log.warning(
            "cluster: this server was taken for lost; telling the others its %d member(s) are here", len(present)
        )
        pipe = self._beater.pipeline(transaction=False)
        for key, value in held:
            pipe.hsetnx(f"{self.prefix}nicks", key, value)
            pipe.sadd(self._key("held", self.server), key)
        # A Redis that lost its data has lost the rooms too: open them again
        # (in a new epoch) so that they can be spoken in, and have the hub
        # tell its members the numbering began again.
        names = {room_key(j.room): j.room for _, _, joins in present for j in joins}
        for key, _ in watched:
            self._open_script(args=[self.prefix, key, names.get(key, key), new_epoch()], client=pipe)
        rows = pipe.execute()[2 * len(held) :]
        with self._lock:
            out = [
                d
                for (key, _), row in zip(watched, rows, strict=True)
                for d in self._hub.renumbered(key, row[1], int(row[3]))
            ]
            if out:
                self._post(out)
        for token, _, joins in present:
            for joined in joins:
                self.publish(Posted((room_key(joined.room),), joined, token, echo=False))

    def _beat_loop(self) -> None:
        every = self.heartbeat / 3
        wait = every
        while not self._stop.wait(wait):
            try:
                self._beat()
                self._beating = True
                self._up()
                wait = every
            except FAILURES as exc:
                self._beating = False
                self._down("the heartbeat", exc)
                wait = min(every, BACKOFF_MOST)

    # -- reads under the hub lock (RedisNicks, ClusterStore) --------------------

    def read(self, query: Callable[[Any], Any], fallback: Any) -> Any:
        """``query`` on the hub's connection, or ``fallback`` if Redis fails
        to answer (then it is left alone for ``READ_PAUSE`` seconds)."""
        now = time.monotonic()
        if now < self._read_paused_until:
            return fallback
        try:
            return query(self._sync)
        except FAILURES as exc:
            self._read_paused_until = now + READ_PAUSE
            self._down("a read", exc)
            return fallback

    def open_room(self, key: str, name: str, epoch: str) -> list[str] | None:
        """The room's row (made with ``epoch`` if new), or None if Redis fails."""
        answer: list[str] | None = self.read(lambda db: self._open_script(args=[self.prefix, key, name, epoch]), None)
        return answer

    def claim(self, key: str, value: str, releasing: str) -> tuple[bool, int] | None:
        """Take nick ``key`` with ``value``; (taken, members online), or None if Redis fails."""
        answer = self.read(lambda db: self._claim_script(args=[self.prefix, self.server, key, value, releasing]), None)
        return None if answer is None else (bool(answer[0]), int(answer[1]))

    def release(self, key: str, value: str) -> None:
        """Give nick ``key`` up (sent by the writer)."""
        with self._wake:
            self._outbox.append(_Release(key, value))
            self._wake.notify()


class RedisNicks(Generic[C]):
    """Who holds which nick, across every server (``common.ports.NickOwners``).

    A claim is one round trip under the hub lock (``scripts.CLAIM``: atomic,
    so of two servers claiming one nick at once exactly one wins); a release
    is sent by the writer, and until it is, this server may take the nick
    again over its own value (a client reconnecting at once)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._held: dict[str, tuple[C, str]] = {}  # nick key -> (owner here, value in Redis)
        self._releasing: dict[str, str] = {}
        self._serials = itertools.count(1)
        #: Members online across the chat at the last claim (the welcome's count).
        self.online = 0

    def claim(self, key: str, owner: C, nick: str = "") -> bool:
        held = self._held.get(key)
        if held is not None:
            return held[0] is owner
        value = f"{self._cluster.server}|{next(self._serials)}|{nick}"
        answer = self._cluster.claim(key, value, self._releasing.get(key, ""))
        if answer is None:
            return False
        taken, self.online = answer
        if taken:
            self._held[key] = (owner, value)
            self._releasing.pop(key, None)
        return taken

    def held(self) -> list[tuple[str, str]]:
        """Every nick held here: (key, value in Redis)."""
        return [(key, value) for key, (_, value) in self._held.items()]

    def release(self, key: str, owner: C) -> None:
        held = self._held.get(key)
        if held is None or held[0] is not owner:
            return
        del self._held[key]
        self._releasing[key] = held[1]
        self._cluster.release(key, held[1])

    def owner(self, key: str) -> C | None:
        held = self._held.get(key)
        return None if held is None else held[0]


def _run_of_messages(batch: list[Posted | _Release | _Question | _Wake], start: int) -> list[Posted]:
    """The messages of one room from ``start`` on, up to the next other item (at most ``RUN``)."""
    first = batch[start]
    assert isinstance(first, Posted)
    run = [first]
    for item in batch[start + 1 : start + RUN]:
        if not (isinstance(item, Posted) and isinstance(item.event, ev.Message | ev.Action)):
            break
        if item.rooms != first.rooms:
            break
        run.append(item)
    return run


class RedisPresence:
    """Who is online and where, across every server (``common.ports.Presence``)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def count(self) -> int | None:
        online: int = self._cluster.nicks.online
        return online or None

    def ask(self, origin: int, question: Question) -> bool:
        return self._cluster.ask(origin, question)


def _by_people(nick: str) -> tuple[str, str]:
    return nick.casefold(), nick


def _answer(question: Question, result: Any) -> object:
    """What Redis said, as ``Hub.answered`` takes it; None if it is not as the scripts write it."""
    try:
        if isinstance(question, ev.Who):
            return tuple(sorted((str(v).split("|", 2)[-1] for v in result), key=_by_people))
        if isinstance(question, ev.Names):
            return tuple(sorted((str(v) for v in result), key=_by_people))
        return [ev.RoomInfo(str(name), int(members), str(topic)) for name, members, topic in result]
    except (ValueError, TypeError):
        return None

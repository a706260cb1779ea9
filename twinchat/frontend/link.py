"""What a transport gives the front end (a way to connect, and the link it
returns), and the session above both transports that comes back by itself.

``Reconnecting`` is the one link a front end holds. Under it, the transport's
links come and go: when one drops without the server saying goodbye (a reset,
a cut cable, a UDP session gone silent), or the server says it is shutting
down (it is most likely restarting), ``Reconnecting`` connects again with the
same nick and password, says ``Register(..., resume=True)`` so the server
does not put it in ``#lobby``, and rejoins each of its rooms from where its
person left off (``ClientView.resume``): the server replays exactly what was
missed, or the latest messages and a gap when it cannot.

Strategy: one supervisor thread waits for the link to drop, then tries again
after a backoff (0.5 s doubling to 30 s, full jitter: a restarted server is not
stormed by every client at once). The sleep, the clock and the random draw are
parameters, so the schedule is tested without waiting. What the person types
while away is queued (at most ``QUEUE_LIMIT`` events) and sent once the rooms
are rejoined; past the bound a line is refused with a status line. The end of
a resume is found as an answer's end is (PROTOCOL.md, "Answers of several
frames"): a Ping after the Joins, whose Pong comes after every replay.

What was sent just before the link dropped is not lost either. The server
sends a framed client its own messages back once it has stored them, so a
message or action whose echo has not come is in doubt. The resume settles it:
the server replays everything after our position, ours included, so one that
is still unmatched when the resume's Pong arrives was never stored (a server
takes a nick's new session only after the old one is gone, with nothing of it
left to handle), and is sent again, before what was typed while away. Where
the replay had a gap (more was said meanwhile than a resume replays), a line
still unmatched may be stored in the gap: it is not sent twice, and the person
is told it is in doubt.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import itertools
import random
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

from common.chat import events as ev
from common.chat.events import ClientEvent, ServerEvent
from common.chat.nicks import nick_key
from common.chat.rooms import room_key
from common.wire.errors import ErrorCode


class ConnectError(Exception):
    """One-line reason the client could not join (refused nick, unreachable server).

    ``code`` is the server's error code when it refused us (or BAD_NICK for a
    nick refused before asking), so a front end can offer another nick."""

    def __init__(self, reason: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(reason)
        self.code = code


#: Refusals that another nick may get past.
NICK_REFUSALS: Final = frozenset({ErrorCode.NICK_TAKEN, ErrorCode.BAD_NICK})

#: Refusals of a registered nick that another password may get past.
PASSWORD_REFUSALS: Final = frozenset({ErrorCode.NEEDS_PASSWORD, ErrorCode.BAD_PASSWORD})

#: Errors before a server's Goodbye after which the client comes back: the
#: server is restarting, or it took a slow link for a dead client. Any other
#: (cut off for flooding or for reading too slowly, a refused nick) is meant.
COME_BACK_AFTER: Final = frozenset({ErrorCode.SHUTTING_DOWN, ErrorCode.IDLE_TIMEOUT})

#: Why a link ended when the server cut it off on purpose without a word: its
#: stream stopped inside a frame, which is how a server aborts a client too
#: slow to read the chat (PROTOCOL.md, "Slow consumers"). Not tried again.
CUT_OFF: Final = "cut off by the server mid-frame, as it cuts off a client too slow to read the chat"

#: How a transport's reason starts when a front end's callback failed: a bug,
#: which a reconnect would only repeat.
CLIENT_ERROR: Final = "client error"

#: Errors a reconnect attempt waits out: the old session still holds the nick
#: (the server has not noticed yet that it is gone), the server is full, its
#: throttle wants a pause, or its store (a chat of many servers: their Redis)
#: is unreachable. Any other refusal ends the session.
TRY_AGAIN_AFTER: Final = frozenset(
    {ErrorCode.NICK_TAKEN, ErrorCode.SERVER_FULL, ErrorCode.TOO_MANY_TRIES, ErrorCode.STORE_FAILED}
)

#: Events typed while the link is down that wait for it; past this, a line is refused.
QUEUE_LIMIT: Final = 100

#: A link that stayed up this long (seconds) starts the backoff over.
STABLE_AFTER: Final = 30.0

#: Messages sent and not yet echoed that are kept track of (a bound on memory,
#: far above what is in flight at once).
UNECHOED_LIMIT: Final = 10_000

#: Seconds a resume waits for its replays to end before it sends what waits.
RESUME_WAIT: Final = 30.0

#: Nonces of the Pings that mark the end of a resume: far above the front ends' own.
_MARKERS: Final = itertools.count(1 << 63)


class Link(Protocol):
    """A registered session with a chat server, as a transport keeps it."""

    def send(self, event: ClientEvent) -> None:
        """Send ``event`` to the server; thread-safe, never blocks long."""

    def close(self, reason: str = "") -> None:
        """Say ``Goodbye(reason)`` if still open, wait (bounded) until the server
        has it, and release everything. Safe to call more than once."""


class Connect(Protocol):
    """``connect(host, port, nick, on_event, on_closed, password=..., resume=...)``:
    register and return once ``Welcome`` arrived, or raise ``ConnectError``.
    Afterwards the transport's receive thread calls ``on_event`` for every
    server event (``Welcome`` first, ``Pong`` too) and ``on_closed(reason)``
    once when the link ends. ``password`` proves a registered nick;
    ``resume``: coming back after a lost link (the server puts the client in
    no room). Both are passed only when set, so a ``Connect`` that predates
    them keeps working without them."""

    def __call__(
        self,
        host: str,
        port: int,
        nick: str,
        on_event: Callable[[ServerEvent], None],
        on_closed: Callable[[str], None],
        /,
        *,
        password: str = "",
        resume: bool = False,
    ) -> Link: ...


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine without a network between (127.0.0.0/8,
    ::1, ``localhost``). Other names are not resolved: they count as remote."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before reconnect attempt ``n`` (from 1): a random
    share (full jitter) of ``base`` doubled each attempt, at most ``cap``."""

    base: float = 0.5
    cap: float = 30.0

    def ceiling(self, attempt: int) -> float:
        """The most attempt ``attempt`` waits."""
        return min(self.cap, self.base * 2.0 ** min(attempt - 1, 64))

    def delay(self, attempt: int, draw: Callable[[], float]) -> float:
        """The wait before attempt ``attempt``; ``draw`` gives a number in [0, 1)."""
        return draw() * self.ceiling(attempt)


class _Attempt:
    """One transport link, and what its events said about how it ended."""

    __slots__ = ("farewell", "gapped", "goodbye", "link", "lost", "marker", "me", "rooms")

    def __init__(self, nick: str = "", rooms: tuple[str, ...] = ()) -> None:
        #: Our nick key and the rooms being rejoined: our own Joined and the
        #: topic briefing of those rooms are not shown again.
        self.me = nick_key(nick) if nick else ""
        self.rooms = rooms
        #: The Ping nonce whose Pong ends the resume (0: not resuming).
        self.marker = 0
        self.link: Link | None = None
        self.farewell: ErrorCode | None = None  # the Error before the server's Goodbye
        self.goodbye = False
        self.lost: str | None = None  # why the link ended, once it did
        #: Keys of the rooms whose resume replay had a gap: what we sent there
        #: just before the cut may be in it, stored but not replayed.
        self.gapped: set[str] = set()


class Reconnecting:
    """The link a front end holds: a transport's link, and the next one when it drops.

    Args:
        connect: the transport's ``Connect``.
        on_event, on_closed: the front end's, as for a transport's link;
            ``on_closed`` is called once, when the session is over for good.
        on_status: one line for the person about the link (lost, back,
            a line not sent).
        whoami: the nick and the rooms to rejoin (``ClientView.nick`` and
            ``ClientView.resume()``, read under the front end's lock).
        password: the nick's password ("" if it has none).
        reconnect: come back after a lost link (False: end the session).
        backoff, draw, wait, clock: the schedule, the random draw in [0, 1),
            a sleep that returns True when woken by ``close``, and a monotonic
            clock (for tests).
    """

    def __init__(
        self,
        connect: Connect,
        host: str,
        port: int,
        *,
        on_event: Callable[[ServerEvent], None],
        on_closed: Callable[[str], None],
        on_status: Callable[[str], None],
        whoami: Callable[[], tuple[str | None, list[ev.Join]]],
        password: str = "",
        reconnect: bool = True,
        backoff: Backoff | None = None,
        draw: Callable[[], float] = random.random,
        wait: Callable[[float], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        queue_limit: int = QUEUE_LIMIT,
    ) -> None:
        self._connect = connect
        self._where = (host, port)
        self._on_event = on_event
        self._on_closed = on_closed
        self._on_status = on_status
        self._whoami = whoami
        self.password = password
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self._draw = draw
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self._clock = clock
        self._queue_limit = queue_limit
        self._lock = threading.Condition()
        self._attempt: _Attempt | None = None
        self._up = False  # the current attempt's link takes what is sent
        self._queue: collections.deque[ClientEvent] = collections.deque()
        self._closing = False
        self._ended = False  # on_closed was called
        self._supervisor: threading.Thread | None = None
        #: Messages and actions sent whose echo has not come back, oldest first.
        self._unechoed: collections.deque[ev.Say | ev.Act] = collections.deque(maxlen=UNECHOED_LIMIT)
        self._me = ""  # our nick as the server spells it (from Welcome and Renamed)
        self._failures = 0  # reconnect attempts since the link was last stable
        self._up_since = 0.0  # when the current link came up (clock)
        #: Delays waited before each reconnect attempt, for tests and logs.
        self.delays: list[float] = []

    # --- the first connection ---------------------------------------------------

    def open(
        self,
        nick: str,
        *,
        another: Callable[[str, ConnectError], str | None],
        password_for: Callable[[str, ConnectError], str | None] | None = None,
    ) -> None:
        """Connect and register ``nick``: while the nick is refused, again with
        ``another(nick, refusal)``; while its password is missing or wrong,
        again with ``password_for(nick, refusal)`` (None from either: give up).

        Raises:
            ConnectError: the last refusal, or any other failure to join.
        """
        password = self.password
        while True:
            attempt = _Attempt()
            with self._lock:
                self._attempt = attempt
            try:
                link = self._call(nick, password, attempt, resume=False)
            except ConnectError as exc:
                retry: str | None = None
                if exc.code in NICK_REFUSALS:
                    retry = nick = another(nick, exc) or ""
                elif exc.code in PASSWORD_REFUSALS and password_for is not None:
                    retry = password = password_for(nick, exc) or ""
                if not retry:
                    raise
                continue
            self.password = password
            with self._lock:
                attempt.link = link
                self._up = attempt.lost is None
            self._up_since = self._clock()
            self._supervisor = threading.Thread(target=self._supervise, name="reconnect", daemon=True)
            self._supervisor.start()
            return

    # --- the Link interface -----------------------------------------------------

    def send(self, event: ClientEvent) -> None:
        """Send ``event`` now, or once the link is back; a status line says
        when it is refused (too many waiting already)."""
        with self._lock:
            if self._closing or self._ended:
                return
            attempt = self._attempt
            link = attempt.link if self._up and attempt is not None else None
            if link is None and len(self._queue) < self._queue_limit:
                self._queue.append(event)
                return
            if link is not None and isinstance(event, ev.Say | ev.Act):
                self._unechoed.append(event)
        if link is not None:
            link.send(event)
        else:
            self._on_status(f"-- not sent: the link is down and {self._queue_limit} lines wait already --")

    def close(self, reason: str = "", *, wait_back: float = 0.0) -> None:
        """Say goodbye on the link if it is up; stop coming back. Idempotent.

        Args:
            wait_back: if lines typed while away wait to be sent, seconds to
                let the link come back and send them first (a script's last
                lines at the end of its input).
        """
        with self._lock:
            if wait_back and self._queue:
                self._lock.wait_for(lambda: self._up or self._ended or self._closing, wait_back)
            if self._closing:
                return
            self._closing = True
            attempt = self._attempt
            link = attempt.link if attempt is not None else None
            unsent = len(self._queue) if not self._up else 0
            self._queue.clear()
            self._lock.notify_all()
        self._stop.set()
        if unsent:
            self._on_status(f"-- {unsent} line(s) typed while away were not sent --")
        if link is not None:
            link.close(reason)
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(5.0)

    # --- the transport's callbacks ----------------------------------------------

    def _call(self, nick: str, password: str, attempt: _Attempt, *, resume: bool) -> Link:
        def on_event(event: ServerEvent) -> None:
            self._event(attempt, event)

        def on_closed(reason: str) -> None:
            self._closed(attempt, reason)

        host, port = self._where
        if password or resume:
            return self._connect(host, port, nick, on_event, on_closed, password=password, resume=resume)
        return self._connect(host, port, nick, on_event, on_closed)

    def _event(self, attempt: _Attempt, event: ServerEvent) -> None:
        kind = type(event)
        if kind is ev.Message or kind is ev.Action:
            assert isinstance(event, ev.Message | ev.Action)
            # A replayed one settles a doubt only while resuming (/history
            # and a join's replay bring older ones).
            if event.sender == self._me and (attempt.marker or not event.history):
                self._echoed(event)
        elif kind is ev.Welcome:
            assert isinstance(event, ev.Welcome)
            self._me = event.nick
        elif kind is ev.Renamed:
            assert isinstance(event, ev.Renamed)
            if event.old == self._me:
                self._me = event.new
        elif kind is ev.Error:
            assert isinstance(event, ev.Error)
            attempt.farewell = event.code
        elif kind is ev.Goodbye:
            attempt.goodbye = True
        elif kind is ev.Replay and attempt.marker:
            assert isinstance(event, ev.Replay)
            if event.gap:
                attempt.gapped.add(room_key(event.room))
        if attempt.marker and self._hidden(attempt, event):
            return
        self._on_event(event)

    def _echoed(self, event: ev.Message | ev.Action) -> None:
        """The server has stored one of ours: it is no longer in doubt. A live
        echo settles the ones sent before it on this link too: the server
        handles a link's requests in order, so their echoes came first, or
        they were refused."""
        said = ev.Say if type(event) is ev.Message else ev.Act
        with self._lock:
            found = next((n for n, e in enumerate(self._unechoed) if type(e) is said and e.text == event.text), None)
            if found is not None and room_key(self._unechoed[found].room) != room_key(event.room):
                key = room_key(event.room)  # the same text in another room: look further
                found = next(
                    (
                        n
                        for n, e in enumerate(self._unechoed)
                        if type(e) is said and e.text == event.text and room_key(e.room) == key
                    ),
                    None,
                )
            if found is None:
                return
            if event.history:
                del self._unechoed[found]
            else:
                for _ in range(found + 1):
                    self._unechoed.popleft()

    def _hidden(self, attempt: _Attempt, event: ServerEvent) -> bool:
        """Whether ``event`` is the resume's own bookkeeping, not news: the
        Welcome, our own Joined and the topic briefing of a room we were in,
        and the Pong that ends the resume (which says we are back)."""
        if isinstance(event, ev.Pong) and event.nonce == attempt.marker:
            with self._lock:
                attempt.marker = 0
                self._lock.notify_all()  # the supervisor sends what waits
            return True
        if isinstance(event, ev.Welcome):
            return True
        if isinstance(event, ev.Joined | ev.Topic) and event.room in attempt.rooms:
            if isinstance(event, ev.Topic):
                return not event.changed
            return nick_key(event.nick) == attempt.me
        return False

    def _closed(self, attempt: _Attempt, reason: str) -> None:
        with self._lock:
            attempt.lost = reason
            if attempt is not self._attempt:
                return
            self._up = False
            self._lock.notify_all()
            if not self._closing and self._comes_back(attempt):
                # The supervisor takes it from here (``open`` starts it once the
                # first link is made, even if that link is gone already).
                return
            final = not self._ended
            self._ended = True
        self._stop.set()
        if final:
            self._on_closed(reason)

    def _comes_back(self, attempt: _Attempt) -> bool:
        """Whether a link that ended so is tried again."""
        if not self.reconnect:
            return False
        if attempt.goodbye:
            return attempt.farewell in COME_BACK_AFTER
        lost = attempt.lost or ""
        return lost != CUT_OFF and not lost.startswith(CLIENT_ERROR)

    # --- coming back ------------------------------------------------------------

    def _supervise(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._closing or self._ended or self._lost())
                if self._closing or self._ended:
                    return
                attempt = self._attempt
                assert attempt is not None and attempt.lost is not None
                old, why = attempt.link, attempt.lost
            if old is not None:
                old.close()  # it ended already: this only releases it
            if self._clock() - self._up_since >= STABLE_AFTER:
                self._failures = 0  # it was up a good while: start the backoff over
            if not self._come_back(why):
                return
            self._up_since = self._clock()

    def _lost(self) -> bool:
        return self._attempt is not None and self._attempt.lost is not None and not self._up

    def _come_back(self, why: str) -> bool:
        """Reconnect until it works, the session is closed, or a refusal ends
        it; False when the session is over."""
        first = True
        while True:
            self._failures += 1
            delay = self.backoff.delay(self._failures, self._draw)
            self.delays.append(delay)
            when = f"reconnecting in {delay:.1f} s (attempt {self._failures})"
            if first:
                self._on_status(
                    f"-- link lost ({why}); {when}; what you type meanwhile is sent "
                    f"once it is back (at most {self._queue_limit} lines) --"
                )
            else:
                self._on_status(f"-- still away ({why}); {when} --")
            first = False
            if self._wait(delay) or self._closing:
                return False
            nick, joins = self._whoami()
            if nick is None:
                return self._give_up("the link was lost before the server welcomed us")
            attempt = _Attempt(nick, tuple(j.room for j in joins))
            attempt.marker = next(_MARKERS)
            with self._lock:
                if self._closing:
                    return False
                self._attempt = attempt
            try:
                link = self._call(nick, self.password, attempt, resume=True)
            except ConnectError as exc:
                if exc.code is not None and exc.code not in TRY_AGAIN_AFTER:
                    return self._give_up(str(exc))
                why = str(exc)
                continue
            except Exception as exc:  # a transport's bug: say so rather than loop
                return self._give_up(f"{CLIENT_ERROR}: {exc!r}")
            resumed = self._resume(attempt, link, joins)
            if resumed is not None:
                return resumed
            why = attempt.lost or why  # dropped again at once: keep trying, the backoff growing

    def _resume(self, attempt: _Attempt, link: Link, joins: list[ev.Join]) -> bool | None:
        """Rejoin the rooms on a new ``link``, then send what waits. True: back;
        False: the session is over; None: the link dropped again meanwhile."""
        with self._lock:
            attempt.link = link
            closing = self._closing
        if closing:
            link.close()
            return False
        for join in joins:
            link.send(join)
        link.send(ev.Ping(attempt.marker))
        with self._lock:
            self._lock.wait_for(lambda: not attempt.marker or attempt.lost is not None or self._closing, RESUME_WAIT)
            # Still unmatched after the replays: never stored. Sent again first
            # (to the rooms it is back in: a line for a room left is dropped),
            # except where the replay had a gap: there an unmatched line may be
            # stored inside the gap, and sending it again could say it twice.
            rejoined = {room_key(room) for room in attempt.rooms} - attempt.gapped
            resend = [e for e in self._unechoed if room_key(e.room) in rejoined]
            doubtful = sum(room_key(e.room) in attempt.gapped for e in self._unechoed)
            again = len(resend)
            self._queue.extendleft(reversed(resend))
            self._unechoed.clear()
        rooms = ", ".join(attempt.rooms)
        line = f"-- back: {rooms} resumed" if rooms else "-- back (in no room)"
        if again:
            line += f"; {again} line(s) the server had not taken before the cut sent again"
        if doubtful:
            line += (
                f"; {doubtful} line(s) sent just before the cut may not have reached the server"
                " (too much was said meanwhile to check): not sent again"
            )
        self._on_status(line + " --")
        self._flush(attempt, link)
        with self._lock:
            if attempt.lost is None:
                return True
            if self._ended or self._closing:
                return False
        link.close()
        return None

    def _flush(self, attempt: _Attempt, link: Link) -> None:
        """Send what was typed while away, then let sends through."""
        while True:
            with self._lock:
                if not self._queue or attempt.lost is not None:
                    self._up = attempt.lost is None and attempt is self._attempt
                    self._lock.notify_all()  # a close waiting for the way back
                    return
                batch = list(self._queue)
                self._queue.clear()
                self._unechoed.extend(e for e in batch if isinstance(e, ev.Say | ev.Act))
            for event in batch:
                link.send(event)

    def _give_up(self, why: str) -> bool:
        with self._lock:
            final = not self._ended and not self._closing
            self._ended = True
            self._lock.notify_all()
            unsent = len(self._queue)
            self._queue.clear()
        if unsent:
            self._on_status(f"-- {unsent} line(s) typed while away were not sent --")
        if final:
            self._on_closed(why)
        return False

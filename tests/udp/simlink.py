"""An in-memory datagram link with a fake clock, for the sans-IO reliability tests.

Two ``Channel`` ends exchange datagrams through a link that loses, duplicates
and delays them (random delays reorder them), all from one seeded ``Random``,
so every run of a test is the same run. The loop is event-driven: it jumps the
clock to the next arrival, timer or scheduled send, so a simulated minute
takes milliseconds.

A direction may also have a bottleneck: a link of ``bandwidth`` bytes per
second behind a drop-tail queue of ``queue`` bytes. A datagram (plus
``IP_UDP_OVERHEAD``) that finds the queue full is dropped; the others leave
the bottleneck one after another at its rate, then take ``delay`` to arrive.
Random loss strikes before the bottleneck, as on a lossy access link.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from common.chat import events as ev
from common.session.reliability import Channel, parse_session
from common.wire.framing import decode_datagram, encode
from common.wire.limits import MAX_DATAGRAM


@dataclass
class LinkConfig:
    """Impairments of one direction."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # chance a datagram is held back by up to 4 extra delays
    delay: float = 0.005
    bandwidth: float | None = None  # bytes per second through the bottleneck; None: no bottleneck
    queue: int = 64 * 1024  # bytes the bottleneck's drop-tail queue holds


#: Bytes of IPv4 and UDP headers a datagram costs on the bottleneck.
IP_UDP_OVERHEAD = 28


@dataclass
class Bottleneck:
    """One direction's bottleneck state and what it did."""

    free_at: float = 0.0  # when the link finishes the last datagram queued
    drops: int = 0  # datagrams the full queue refused
    peak_queue: int = 0  # bytes queued at most
    carried: int = 0  # bytes it forwarded, overhead included


@dataclass
class End:
    """One side: its channel, what it was asked to send and what it delivered."""

    name: str
    channel: Channel
    token: int
    to_send: list[tuple[float, bytes]] = field(default_factory=list)  # (when, frame), sorted
    sent: list[bytes] = field(default_factory=list)
    delivered: list[bytes] = field(default_factory=list)
    datagrams_out: int = 0
    largest_datagram: int = 0


def session_prefix(token: int) -> bytes:
    return encode(ev.Session(token))


class SimLink:
    """Two ends, two impaired directions, one fake clock."""

    def __init__(
        self,
        seed: int,
        *,
        a_to_b: LinkConfig | None = None,
        b_to_a: LinkConfig | None = None,
        reliable: bool = True,
        dead_after: float = 15.0,
        keepalive_after: float = 5.0,
        max_backlog: int | None = None,
        **channel: object,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        kwargs: dict[str, object] = {"reliable": reliable, "dead_after": dead_after, "keepalive_after": keepalive_after}
        if max_backlog is not None:
            kwargs["max_backlog"] = max_backlog
        kwargs.update(channel)  # any other Channel keyword, for both ends
        self.a = End("a", Channel(0.0, prefix=session_prefix(1), **kwargs), 1)  # type: ignore[arg-type]
        self.b = End("b", Channel(0.0, prefix=session_prefix(2), **kwargs), 2)  # type: ignore[arg-type]
        self.config = {"a": a_to_b or LinkConfig(), "b": b_to_a or LinkConfig()}
        self._queue: list[tuple[float, int, str, bytes]] = []  # (arrival, tiebreak, receiving end, datagram)
        self._tiebreak = 0
        self.bottleneck = {"a": Bottleneck(), "b": Bottleneck()}  # by sending end

    def other(self, end: End) -> End:
        return self.b if end is self.a else self.a

    def schedule(self, end: End, frames: list[bytes], start: float = 0.0, spacing: float = 0.0) -> None:
        """Have ``end`` send ``frames``, the first at ``start``, then one every ``spacing`` seconds."""
        end.to_send.extend((start + i * spacing, f) for i, f in enumerate(frames))
        end.to_send.sort(key=lambda item: item[0])

    def _transmit(self, sender: End, datagram: bytes) -> None:
        sender.datagrams_out += 1
        sender.largest_datagram = max(sender.largest_datagram, len(datagram))
        cfg = self.config[sender.name]
        receiver = self.other(sender).name
        copies = 0 if self.rng.random() < cfg.loss else 1
        if copies and self.rng.random() < cfg.duplicate:
            copies = 2
        for _ in range(copies):
            delay = cfg.delay
            if cfg.bandwidth is not None:
                wait = self._through_bottleneck(self.bottleneck[sender.name], cfg, len(datagram))
                if wait is None:
                    continue
                delay += wait
            if self.rng.random() < cfg.reorder:
                delay += self.rng.uniform(0, 4 * cfg.delay)
            self._tiebreak += 1
            heapq.heappush(self._queue, (self.now + delay, self._tiebreak, receiver, datagram))

    def _through_bottleneck(self, link: Bottleneck, cfg: LinkConfig, size: int) -> float | None:
        """How long a datagram of ``size`` bytes takes to leave the bottleneck
        from now, or None if the queue drops it."""
        assert cfg.bandwidth is not None
        size += IP_UDP_OVERHEAD
        start = max(self.now, link.free_at)
        queued = int((start - self.now) * cfg.bandwidth)
        if queued + size > cfg.queue:
            link.drops += 1
            return None
        link.peak_queue = max(link.peak_queue, queued + size)
        link.free_at = start + size / cfg.bandwidth
        link.carried += size
        return link.free_at - self.now

    def _pump(self) -> None:
        for end in (self.a, self.b):
            # What is due goes in one call, as a server queues a run: small
            # frames due together travel as bundles.
            due = 0
            while due < len(end.to_send) and end.to_send[due][0] <= self.now:
                due += 1
            if due:
                frames = [frame for _, frame in end.to_send[:due]]
                queued = end.channel.send_all(frames)  # the rest waits for the window to move
                del end.to_send[:queued]
                end.sent += frames[:queued]
            for datagram in end.channel.datagrams(self.now):
                self._transmit(end, datagram)

    def _arrive(self, receiver: End, datagram: bytes) -> None:
        # As the server and the load generator read them: the fast path when
        # it applies (runs of segments unpacked at once), else every frame.
        parsed = parse_session(datagram)
        if parsed is not None:
            token, data, acks = parsed
            assert token == self.other(receiver).token
            receiver.delivered.extend(receiver.channel.receive_parsed(data, acks, self.now))
            return
        events = decode_datagram(datagram)
        session = events[0]
        assert isinstance(session, ev.Session)
        assert session.token == self.other(receiver).token
        receiver.delivered.extend(receiver.channel.receive(events[1:], self.now))

    def next_time(self) -> float:
        candidates = [self.a.channel.next_deadline(), self.b.channel.next_deadline()]
        if self._queue:
            candidates.append(self._queue[0][0])
        for end in (self.a, self.b):
            if end.to_send:
                candidates.append(end.to_send[0][0])
        # Never stand still: a deadline already passed is served on the next step.
        return max(min(candidates), self.now + 1e-4)

    def step(self) -> None:
        self._pump()
        self.now = self.next_time()
        while self._queue and self._queue[0][0] <= self.now:
            _, _, name, datagram = heapq.heappop(self._queue)
            self._arrive(self.a if name == "a" else self.b, datagram)

    def done(self) -> bool:
        return all(not end.to_send and end.channel.flushed for end in (self.a, self.b))

    def run_until_done(self, limit: float) -> None:
        """Step until both ends sent and had acknowledged everything, or ``limit`` seconds."""
        while not self.done() and self.now < limit:
            self.step()
        # Let the last acks and deliveries land.
        end_at = self.now + 1.0
        while self.now < end_at and (self._queue or not self.done()):
            self.step()

    def run_for(self, seconds: float) -> None:
        end_at = self.now + seconds
        while self.now < end_at:
            self.step()


def all_within_datagram_limit(link: SimLink) -> bool:
    return max(link.a.largest_datagram, link.b.largest_datagram) <= MAX_DATAGRAM

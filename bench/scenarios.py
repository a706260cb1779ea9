"""The scenarios and transports of the comparison, full size and ``--quick``.

Full sizes are the issue's: every message text is 64 bytes; a window is the
number of a sender's messages not yet seen by every receiver; a rate is
messages per second per sender, evenly spaced. ``--quick`` keeps the shape
of each scenario at a size that finishes the whole matrix in under a minute:
a smoke run, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bench.load import Plan, room_members


@dataclass(frozen=True, slots=True)
class Scenario:
    """One kind of work; ``plan`` turns it into what the load generator does."""

    name: str
    clients: int
    senders: int
    #: Messages per sender.
    messages: int
    window: int | None = None
    rate: float | None = None
    #: Clients that join and never read (they are the last ones).
    stuck: int = 0
    deadline_s: float = 60.0
    #: Only these transports run it (None: all of them).
    only: tuple[str, ...] | None = None
    what: str = ""
    #: Rooms the clients are spread over, ``senders // rooms`` senders in each
    #: (0: everyone in ``#lobby``; ``bench.load`` says who is in which room).
    rooms: int = 0

    def plan(self, *, quiet_s: float) -> Plan:
        readers = self.clients - self.stuck
        if self.rooms:
            senders = self._room_senders()
        else:
            # Senders are spread over the client list, so a fan-out's one sender
            # is not also the first client to join.
            step = max(1, readers // max(1, self.senders))
            senders = tuple(range(0, step * self.senders, step))[: self.senders]
        return Plan(
            clients=self.clients,
            senders=senders,
            messages=self.messages,
            window=self.window,
            rate=self.rate,
            stuck=tuple(range(readers, self.clients)),
            deadline_s=self.deadline_s,
            quiet_s=quiet_s,
            rooms=self.rooms,
        )

    def _room_senders(self) -> tuple[int, ...]:
        """The same number of senders in every room, spread over its members.

        Raises:
            ValueError: the senders do not divide evenly among the rooms.
        """
        per_room, extra = divmod(self.senders, self.rooms)
        if extra or not per_room:
            raise ValueError(f"{self.name}: {self.senders} senders do not share out evenly over {self.rooms} rooms")
        chosen: list[int] = []
        for room in range(self.rooms):
            members = room_members(self.clients, self.rooms, room)
            step = max(1, len(members) // per_room)
            chosen += members[0 : step * per_room : step][:per_room]
        return tuple(sorted(chosen))


@dataclass(frozen=True, slots=True)
class Transport:
    """A server and a path to it: TCP, or UDP (reliable or not) with optional loss."""

    name: str
    kind: str
    unreliable: bool = False
    #: Loss each way through the seeded proxy, in percent (0: no proxy).
    loss: float = 0.0
    #: The server keeps its store on disk (SQLite in a fresh directory), as it
    #: does by default; otherwise ``--ephemeral``, which every other transport runs.
    store: bool = False
    #: TCP over TLS (a throwaway CA and certificate, made for the run).
    tls: bool = False
    #: The WebSocket dialect on the TCP port, a binary message per frame (``bench.wsload``).
    websocket: bool = False
    #: Seconds between two scrapes of the server's metrics during the run
    #: (``--metrics`` on loopback); 0: metrics off. What metrics cost.
    scrape: float = 0.0


TRANSPORTS: Final = {
    t.name: t
    for t in (
        Transport("tcp", "tcp"),
        Transport("tcp-store", "tcp", store=True),
        Transport("udp", "udp"),
        Transport("udp-store", "udp", store=True),
        Transport("udp-unreliable", "udp", unreliable=True),
        Transport("udp-loss5", "udp", loss=5.0),
        Transport("udp-loss20", "udp", loss=20.0),
        Transport("udp-unreliable-loss5", "udp", unreliable=True, loss=5.0),
        Transport("udp-unreliable-loss20", "udp", unreliable=True, loss=20.0),
        Transport("tcp-tls", "tcp", tls=True),  # last: the others keep their colours
        Transport("websocket", "tcp", websocket=True),
    )
}

FULL: Final = (
    Scenario(
        "throughput", 10, 10, 2000, window=64, deadline_s=60, what="10 clients all sending 2000 messages, window 64"
    ),
    # Twice the throughput scenario's senders, each window of 64 reaching 19
    # others: the UDP server's core is full and its channels' queues are the
    # deepest of any scenario, where a retransmission timer that misjudges
    # queueing for loss resends what was never lost (the target: at most 1% of
    # the Data segments sent again, each message delivered exactly once).
    Scenario(
        "saturated",
        20,
        20,
        2000,
        window=64,
        deadline_s=60,
        only=("tcp", "udp"),
        what="20 clients all sending 2000 messages, window 64",
    ),
    Scenario("latency", 100, 10, 500, rate=50, deadline_s=40, what="100 clients, 10 sending 50 msg/s for 10 s"),
    Scenario("fan-out", 500, 1, 500, rate=100, deadline_s=40, what="500 clients, 1 sending 100 msg/s for 5 s"),
    Scenario(
        "slow-baseline",
        9,
        9,
        50_000,
        window=64,
        deadline_s=120,
        what="9 clients all sending 50,000 messages (the slow-consumer scenario without its stuck client)",
    ),
    Scenario(
        "slow-consumer",
        10,
        9,
        50_000,
        window=64,
        stuck=1,
        deadline_s=120,
        what="10 clients, one never reads, the other 9 send 50,000 messages each",
    ),
    Scenario(
        "memory",
        1000,
        1,
        500,
        rate=100,
        deadline_s=40,
        only=("tcp",),
        what="1000 TCP clients, 1 sending 100 msg/s for 5 s",
    ),
    # The latency scenario's 500 messages per sender (475,000 deliveries, as
    # many latencies for the p99) over many small rooms instead of one big one,
    # at 20 msg/s per sender (19,000 deliveries a second), not the latency
    # scenario's 50: with 1000 sessions the UDP server's core is full at about
    # 25,000 deliveries a second (a third of it goes to its timers over every
    # session), and a p99 taken past that measures the queue, not the latency.
    Scenario(
        "rooms",
        1000,
        50,
        500,
        rate=20,
        rooms=50,
        deadline_s=60,
        only=("tcp", "udp"),
        what="1000 clients in 50 rooms of 20 (out of #lobby), 1 per room sending 20 msg/s for 25 s",
    ),
)

QUICK: Final = (
    Scenario("throughput", 10, 10, 300, window=64, deadline_s=10, what="10 clients all sending 300 messages"),
    Scenario(
        "saturated",
        20,
        20,
        300,
        window=64,
        deadline_s=10,
        only=("tcp", "udp"),
        what="20 clients all sending 300 messages",
    ),
    Scenario("latency", 20, 5, 50, rate=50, deadline_s=10, what="20 clients, 5 sending 50 msg/s for 1 s"),
    Scenario("fan-out", 100, 1, 50, rate=100, deadline_s=10, what="100 clients, 1 sending 100 msg/s for 0.5 s"),
    Scenario("slow-baseline", 9, 9, 1500, window=64, deadline_s=15, what="9 clients all sending 1500 messages"),
    Scenario(
        "slow-consumer",
        10,
        9,
        1500,
        window=64,
        stuck=1,
        deadline_s=15,
        what="as slow-baseline plus a client that never reads",
    ),
    Scenario(
        "rooms",
        100,
        5,
        25,
        rate=20,
        rooms=5,
        deadline_s=10,
        only=("tcp", "udp"),
        what="100 clients in 5 rooms of 20, 1 per room sending 20 msg/s for 1.25 s",
    ),
)


#: ``--quick`` runs these transports unless told otherwise: one of each kind, so
#: the smoke run stays under a minute (each lossy transport costs ~15 s).
QUICK_TRANSPORTS: Final = ("tcp", "udp", "udp-unreliable", "udp-loss20")


def select(names: list[str] | None, quick: bool) -> list[Scenario]:
    """The scenarios to run, by name, in the table's order.

    Raises:
        ValueError: an unknown name.
    """
    table = QUICK if quick else FULL
    if not names:
        return list(table)
    known = {s.name: s for s in table}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown scenario {', '.join(unknown)} (known: {', '.join(known)})")
    return [s for s in table if s.name in names]

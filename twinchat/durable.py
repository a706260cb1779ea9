"""Durable before delivered: the store's writer thread, and the deliveries it holds back.

The rule (issue 9): a message is in the store (its WAL) before any client is
sent it, so after a ``kill -9`` every message any client saw is in the history.
The hub stages what it stores under the hub lock (``common.ports.Store``); the
``Courier`` is what every transport hands the hub's deliveries to, instead of
calling ``common.fanout.deliver`` itself.

Strategy: group commit. ``post`` (hub lock held) asks the store whether it
has staged anything. If nothing is staged, held or being written, the
deliveries go out at once, exactly as without a store (an in-memory store
never stages anything, so ``--ephemeral`` costs one call). Otherwise they are
held, in order, and the writer thread wakes: under the lock it detaches
everything staged (one batch) and takes every held delivery, writes the batch
in one transaction outside the lock, then takes the lock again and delivers
what it held, in the order it was posted. Whatever is posted while a
write is under way waits for the next one, which then covers all of it: the
busier the chat, the more messages one commit carries.

A write that fails (a full disk, a lost file) is logged and survived: the
store keeps the batch and retries it with the next, and the deliveries go
out anyway, since holding the conversation hostage to a disk would be worse;
the log says what is not yet durable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from common import fanout
from common.chat.hub import Delivery, Hub
from common.ports import Store, StoreFault
from twinchat.metrics import STORE_WRITE_BUCKETS, Histogram

log = logging.getLogger("twinchat.store")

#: Called for deliveries that start, rename or end sessions (the servers log them).
Notice = Callable[[Delivery[Any]], None]

#: Seconds between two log lines about the same failing store.
FAULT_LOG_EVERY: Final = 10.0


class Courier:
    """Delivers the hub's decisions once what they depend on is in the store.

    Args:
        hub: the hub whose deliveries these are.
        lock: the hub lock; ``post`` is called with it held.
        store: the hub's store.
        notice: passed on to ``common.fanout.deliver``.
    """

    def __init__(self, hub: Hub[Any], lock: threading.Lock, store: Store, notice: Notice | None) -> None:
        self._hub = hub
        self._lock = lock
        self._store = store
        self._notice = notice
        self._wake = threading.Condition(lock)
        self._held: list[list[Delivery[Any]]] = []  # deliveries waiting for the next write
        self._writing = False
        self._stopping = False
        self._last_fault = -FAULT_LOG_EVERY
        self._faults = 0
        #: Transactions written, and deliveries held back for them (for figures and tests).
        self.writes = 0
        self.held = 0
        #: What the fan-out pushed, and how long each write took (for the metrics).
        self.tally = fanout.Tally()
        self.write_seconds = Histogram(STORE_WRITE_BUCKETS)
        self._thread = threading.Thread(target=self._run, name="twinchat-store-writer", daemon=True)
        self._thread.start()

    def post(self, deliveries: list[Delivery[Any]]) -> None:
        """Deliver now, or once the store has what they depend on (hub lock held)."""
        if not (self._held or self._writing or self._store.dirty()):
            if deliveries:
                fanout.deliver(self._hub, deliveries, self._notice, self.tally)
            return
        if deliveries:
            self._held.append(deliveries)
            self.held += len(deliveries)
        self._wake.notify()

    def flush(self) -> None:
        """Write and deliver everything posted so far, now (hub lock held):
        for a server about to say goodbye to everyone."""
        while self._writing:
            self._wake.wait()
        batch, held = self._take()
        self._write(batch)
        fanout.deliver(self._hub, [d for deliveries in held for d in deliveries], self._notice, self.tally)

    def close(self) -> None:
        """Flush, stop the writer thread, close the store. Idempotent."""
        with self._lock:
            if self._stopping:
                return
            self.flush()
            self._stopping = True
            self._wake.notify_all()
        self._thread.join()
        if self.writes:
            log.info("store: %d transaction(s) held back %d deliveries until written", self.writes, self.held)
        try:
            self._store.close()
        except StoreFault as exc:
            log.error("closing the store: %s", exc)

    def _take(self) -> tuple[object | None, list[list[Delivery[Any]]]]:
        """Everything staged, and every delivery waiting for it (lock held)."""
        held, self._held = self._held, []
        return self._store.detach(), held

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._held or self._stopping or self._store.dirty()):
                    self._wake.wait()
                if self._stopping:
                    return
                batch, held = self._take()
                self._writing = True
            try:
                self._write(batch)
            finally:
                with self._lock:
                    # One call for all: runs to one audience that several
                    # posts made are encoded and pushed once.
                    fanout.deliver(self._hub, [d for deliveries in held for d in deliveries], self._notice, self.tally)
                    self._writing = False
                    self._wake.notify_all()

    def _write(self, batch: object | None) -> None:
        if batch is None:
            return
        # Writes never overlap (the writer thread's, or a flush that waited
        # for it under the hub lock), so the histogram has one writer at a time.
        start = time.perf_counter()
        try:
            self._store.write(batch)
            self.writes += 1
            self.write_seconds.observe(time.perf_counter() - start)
        except StoreFault as exc:
            self._fault(exc)

    def _fault(self, exc: StoreFault) -> None:
        self._faults += 1
        now = time.monotonic()
        if now - self._last_fault >= FAULT_LOG_EVERY:
            log.error("the store could not write (%d time(s) so far; kept to retry): %s", self._faults, exc)
            self._last_fault = now

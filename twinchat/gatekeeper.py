"""Passwords checked at the edge: outside the hub lock, throttled, a few at a time.

Hashing a password takes tens of milliseconds and 16 MiB (``common.accounts``);
done under the hub lock it would stall the whole chat for every login, so the
transports hand every account event (``Register`` with a password,
``RegisterAccount``, ``ChangePassword``, ``DropAccount``) to ``Gatekeeper.vet``
from the connection's own thread, with no lock held, and give the hub the
``Vetted`` verdict instead. ``hashlib.scrypt`` releases the GIL, so a login
storm competes with the chat for cores, not for the interpreter.

Guessing is throttled per nick and per address (``common.accounts.Throttle``,
5 wrong tries a minute): a refused try costs no hashing at all. The throttle
is asked again once a hashing slot is free, and a try it lets through is
charged as a failure before it is hashed (a right password is refunded), so
parallel guesses cannot race past it while their hashes run. Hashes run at most one
fewer at a time than the machine has cores (and at most
``MAX_CONCURRENT_HASHES``), so a login storm leaves a core to the chat.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Final

from common.accounts import (
    DEFAULT_COST,
    MAX_CONCURRENT_HASHES,
    ScryptCost,
    Throttle,
    host_key,
    make_verifier,
    needs_upgrade,
    verify,
)
from common.chat import events as ev
from common.chat.hub import ACCOUNT_EVENTS, Hub, Vetted
from common.chat.nicks import check_nick, nick_key
from common.wire.errors import RuleError

log = logging.getLogger("twinchat.accounts")

#: Account events, as the transports test for them.
AccountEvent = ev.Register | ev.RegisterAccount | ev.ChangePassword | ev.DropAccount

#: Their classes, for a quick test of a whole batch (most batches hold none).
ACCOUNT_TYPES: Final = frozenset({ev.Register, ev.RegisterAccount, ev.ChangePassword, ev.DropAccount})

__all__ = ["ACCOUNT_TYPES", "AccountEvent", "Gatekeeper", "needs_vetting"]

#: Wrong passwords, for the log and the figures.
_FAILED: Final = "wrong password"


def needs_vetting(item: object) -> bool:
    """Whether ``item`` carries a password the edge must check before the hub
    sees it (a Register without one needs nothing: the hub refuses it if
    the nick is registered)."""
    if type(item) is ev.Register:
        return bool(item.password)
    return isinstance(item, ACCOUNT_EVENTS)


def _proof(event: AccountEvent) -> str:
    """The password that proves the account, in ``event`` ("" for a new one)."""
    if isinstance(event, ev.ChangePassword):
        return event.old
    if isinstance(event, ev.RegisterAccount):
        return ""
    return event.password


class Gatekeeper:
    """Checks passwords for one hub; thread-safe.

    Args:
        hub: the hub, read under ``lock`` for the verifier an event is checked against.
        lock: the hub lock.
        cost: the scrypt cost of new verifiers.
    """

    def __init__(self, hub: Hub[Any], lock: threading.Lock, *, cost: ScryptCost = DEFAULT_COST) -> None:
        self._hub = hub
        self._lock = lock
        self._cost = cost
        self._throttle = Throttle()
        self._throttle_lock = threading.Lock()
        # Hashing takes a core while it runs: leave one to the chat.
        self.concurrency = max(1, min(MAX_CONCURRENT_HASHES, (os.cpu_count() or 2) - 1))
        self._slots = threading.BoundedSemaphore(self.concurrency)
        #: Passwords checked, refused as wrong, refused by the throttle (figures).
        self.checked = 0
        self.wrong = 0
        self.throttled = 0

    def vet(self, conn: Any, address: str, event: AccountEvent) -> Vetted:
        """The verdict on ``event``'s password, for ``conn`` at ``address``
        (its host, or host and port). Call it with no lock held: it hashes."""
        with self._lock:
            verifier = self._hub.verifier_for(conn, event)
            nick = event.nick if isinstance(event, ev.Register) else self._hub.nick_of(conn) or ""
        proof = _proof(event)
        try:
            key = nick_key(check_nick(nick))
        except RuleError:
            # Not registered yet (or a nick no one may have): nothing to prove,
            # and the hub says what is wrong; a new account still gets its verifier.
            key, proof = "", ""
        host = host_key(address)
        ok = False
        if verifier and proof:
            wait = self._wait(key, host)
            if wait > 0:
                return Vetted(event, verifier, False, wait=wait)
        with self._slots:
            if verifier and proof:
                wait = self._wait(key, host, begin=True)  # asked again: the slot may have taken a while
                if wait > 0:
                    return Vetted(event, verifier, False, wait=wait)
                ok = verify(verifier, proof)
                self._judged(key, host, ok=ok)
            new = ""
            if isinstance(event, ev.RegisterAccount) and not verifier:
                new = make_verifier(event.password, cost=self._cost)
            elif isinstance(event, ev.ChangePassword) and ok:
                new = make_verifier(event.new, cost=self._cost)
            elif isinstance(event, ev.Register) and ok and needs_upgrade(verifier, self._cost):
                # Proved with a verifier weaker than today's: store a fresh one.
                new = make_verifier(event.password, cost=self._cost)
        return Vetted(event, verifier, ok, new)

    def _wait(self, key: str, host: str, *, begin: bool = False) -> float:
        """The throttle's wait for this try (a refusal counted); ``begin``:
        and the try charged if it may go ahead, before hashing, so checks in
        parallel (one per hashing slot) cannot each pass a throttle that has
        one try left."""
        ask = self._throttle.begin if begin else self._throttle.wait
        with self._throttle_lock:
            wait = ask(key, host, time.monotonic())
            if wait > 0:
                self.throttled += 1
            return wait

    def _judged(self, key: str, host: str, *, ok: bool) -> None:
        with self._throttle_lock:
            self.checked += 1
            if ok:
                self._throttle.succeeded(key, host, begun=True)
            else:
                self.wrong += 1  # charged already, when it began
        if not ok:
            log.info("%s for %s from %s", _FAILED, key, host)

"""Abuse of the UDP server (issue 15): one host must not lock the others out,
and a client that gives up must not leave a ghost nick behind.

Attackers send from 127.0.0.2, honest clients from 127.0.0.1: the server
counts by source address, loopback included.
"""

from __future__ import annotations

import gc
import socket
import subprocess
import threading
import weakref
from collections.abc import Callable, Iterator

import pytest

from common.chat import events as ev
from common.fanout import SLOW_DETAIL
from common.session.opener import hello as hello_datagram
from common.wire.framing import decode_datagram, encode
from twinchat.frontend import ConnectError
from udpchat.server import ChatServer

from .harness import PATIENCE, Member, members, python, raw_session, stop

ATTACKER = "127.0.0.2"


@pytest.fixture
def server() -> Iterator[Callable[..., ChatServer]]:
    made: list[ChatServer] = []

    def make(**options: object) -> ChatServer:
        srv = ChatServer("127.0.0.1", 0, rate_limit=0, **options)  # type: ignore[arg-type]
        srv.start()
        made.append(srv)
        return srv

    yield make
    for srv in made:
        srv.shutdown()


def _wait(predicate: Callable[[], bool]) -> bool:
    """Poll ``predicate`` at most PATIENCE seconds (the server offers no event to wait on)."""
    never = threading.Event()
    for _ in range(int(PATIENCE / 0.01)):
        if predicate():
            return True
        never.wait(0.01)
    return False


def _half_open(address: tuple[str, int], host: str) -> socket.socket:
    """Hello, Cookie, Hello with the cookie, from ``host``; the Accept is not awaited."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(PATIENCE)
    sock.sendto(hello_datagram(b""), address)
    cookie = decode_datagram(sock.recv(2048))[0]
    assert isinstance(cookie, ev.Cookie)
    sock.sendto(hello_datagram(cookie.cookie), address)
    return sock


def test_one_host_with_unregistered_sessions_does_not_lock_others_out(server: Callable[..., ChatServer]) -> None:
    # Before: every unregistered session counted toward --max-clients, so 8
    # handshakes from one address refused every newcomer server-full.
    srv = server(max_clients=8, max_per_host=8, register_timeout=PATIENCE)
    socks = [_half_open(srv.address, ATTACKER) for _ in range(20)]
    try:
        assert _wait(lambda: srv.peer_count() >= 8)
        honest = Member(srv.address, "alice")
        try:
            assert honest.wait_for(lambda m: m.has(ev.Welcome, nick="alice", online=1))
        finally:
            honest.link.close()
        # The extras got no session: no Accept, no state kept.
        assert srv.counters["too many unregistered from one host"] == 12
    finally:
        for sock in socks:
            sock.close()


class _DeafAfterAccept:
    """A relay that passes the handshake both ways, then drops every session
    datagram from the server: the client's Welcome never arrives, while the
    server hears all the client says (issue 15 item 1, made deterministic)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind(("127.0.0.1", 0))
        self._back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._back.bind(("127.0.0.1", 0))
        self._client: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._upstream, daemon=True),
            threading.Thread(target=self._downstream, daemon=True),
        ]
        for sock in (self._front, self._back):
            sock.settimeout(0.05)
        for thread in self._threads:
            thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._front.getsockname()[:2]
        return host, port

    def _upstream(self) -> None:
        while not self._stop.is_set():
            try:
                data, self._client = self._front.recvfrom(2048)
            except OSError:
                continue
            self._back.sendto(data, self._target)

    def _downstream(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._back.recv(2048)
            except OSError:
                continue
            if type(decode_datagram(data)[0]) is not ev.Session and self._client is not None:
                self._front.sendto(data, self._client)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(PATIENCE)
        self._front.close()
        self._back.close()


def test_a_client_that_gives_up_says_goodbye_and_frees_its_nick(server: Callable[..., ChatServer]) -> None:
    # Before: the client exited without a word and the server kept "ann"
    # registered until the idle timeout, far beyond the register timeout here.
    srv = server(register_timeout=PATIENCE, idle_timeout=60)
    relay = _DeafAfterAccept(srv.address)
    try:
        with pytest.raises(ConnectError, match="did not answer"):
            Member(relay.address, "ann", timeout=1.0)
        assert _wait(lambda: srv.peer_count() == 0)
        assert srv._hub.nicks() == ()
    finally:
        relay.close()


def test_a_retry_from_the_same_host_gets_the_nick_of_its_ghost(server: Callable[..., ChatServer]) -> None:
    # Before: a session that registered and never acknowledged its Welcome
    # held the nick; the same user's retry was refused nick-taken.
    srv = server(register_timeout=PATIENCE, idle_timeout=60)
    with members(srv.address, "bob") as (bob,):
        ghost, token = raw_session(srv.address)
        try:
            register = encode(ev.Register("ann"))
            ghost.sendto(encode(ev.Session(token)) + encode(ev.Data(0, 0, register)), srv.address)
            assert bob.wait_for(lambda m: m.has(ev.Joined, nick="ann"))
            ann = Member(srv.address, "ann")
            try:
                assert ann.wait_for(lambda m: m.has(ev.Welcome, nick="ann"))
                assert bob.wait_for(lambda m: m.has(ev.Left, nick="ann", reason="replaced by a new session"))
            finally:
                ann.link.close()
        finally:
            ghost.close()


def test_a_registered_session_that_never_acknowledges_is_dropped(server: Callable[..., ChatServer]) -> None:
    # Before: it held its nick until the idle timeout (60 s here).
    srv = server(register_timeout=0.5, idle_timeout=60)
    with members(srv.address, "bob") as (bob,):
        ghost, token = raw_session(srv.address)
        try:
            register = encode(ev.Register("ann"))
            ghost.sendto(encode(ev.Session(token)) + encode(ev.Data(0, 0, register)), srv.address)
            assert bob.wait_for(lambda m: m.has(ev.Joined, nick="ann"))
            assert bob.wait_for(lambda m: m.has(ev.Left, nick="ann", reason="never confirmed its session"))
            assert srv._hub.nicks() == ("bob",)
        finally:
            ghost.close()


def _deaf_member(address: tuple[str, int], nick: str) -> tuple[socket.socket, int]:
    """A session that registers, acknowledges its Welcome (so it counts as a
    client that hears), and then never acknowledges anything again."""
    sock, token = raw_session(address)
    register = encode(ev.Register(nick))
    sock.sendto(encode(ev.Session(token)) + encode(ev.Data(0, 0, register)), address)
    heard = 0
    while True:
        frames = decode_datagram(sock.recv(2048))
        seqs = [f.seq for f in frames if isinstance(f, ev.Data)]
        if seqs:
            heard = max(heard, *seqs) + 1
            chunks = [decode_datagram(f.chunk)[0] for f in frames if isinstance(f, ev.Data) and f.chunk]
            if any(isinstance(c, ev.Welcome) for c in chunks):
                sock.sendto(encode(ev.Session(token)) + encode(ev.Ack(heard, ())), address)
                return sock, token


def test_a_deaf_session_is_dropped_after_a_bounded_amount_of_chat_and_freed(
    server: Callable[..., ChatServer],
) -> None:
    # Issue 15 item 3: a session that stops acknowledging is cut off once
    # --max-queue bytes of chat are held for it, the others are told, and
    # nothing of it stays behind once its farewell has had its linger time.
    max_queue = 64 * 1024
    srv = server(max_queue=max_queue, register_timeout=PATIENCE, idle_timeout=60)
    with members(srv.address, "bob") as (bob,):
        deaf, _ = _deaf_member(srv.address, "deaf")
        try:
            assert bob.wait_for(lambda m: m.has(ev.Joined, nick="deaf"))
            with srv._lock:
                peer = next(p for p in srv._peers.values() if srv._hub.nick_of(p) == "deaf")
            ref = weakref.ref(peer)
            del peer
            line = "x" * 1000
            # Twice the bound in chat: the deaf session must be cut within it.
            # bob hears his own lines back, so he says them in steps of an
            # eighth of the bound, each once the last has come back: he keeps
            # up, and only the deaf session's backlog grows.
            step = max_queue // len(line) // 8
            for n in range(step, 2 * max_queue // len(line) + 1, step):
                for _ in range(step):
                    bob.link.send(ev.Say("#lobby", line))
                assert bob.wait_for(lambda m, n=n: len(m.texts("bob")) == n)
            assert bob.wait_for(lambda m: m.has(ev.Left, nick="deaf", reason=SLOW_DETAIL))
            assert srv.counters["slow consumer"] == 1
            assert _wait(lambda: srv.peer_count() == 1)  # its farewell went unacknowledged
            gc.collect()
            assert ref() is None, gc.get_referrers(ref())
        finally:
            deaf.close()


def test_a_client_cut_off_for_being_slow_names_the_cause(server: Callable[..., ChatServer]) -> None:
    # Issue 15 item 5, over UDP: the plain client's last word is one line
    # that names the cause, not "the server stopped answering".
    srv = server(max_queue=16384)
    with members(srv.address, "flood") as (flooder,):
        slow = python(
            "-m",
            "udpchat.client",
            "--port",
            str(srv.address[1]),
            "--nick",
            "slow",
            "--plain",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert flooder.wait_for(lambda m: m.has(ev.Joined, nick="slow"))
            for n in range(1, 10_001):  # far more than the bound: 4 kB each against 16 kB held
                if flooder.has(ev.Left, nick="slow"):
                    break
                flooder.link.send(ev.Say("#lobby", "x" * 4000))
                # Each once the last is back: the flooder hears its own flood,
                # and must keep up with it or be the slow one itself.
                assert flooder.wait_for(lambda m, n=n: len(m.texts("flood")) == n)
            assert flooder.wait_for(lambda m: m.has(ev.Left, nick="slow", reason=SLOW_DETAIL))
            assert slow.stdout is not None and slow.stderr is not None
            reader = threading.Thread(target=slow.stdout.read, name="slow stdout")
            reader.start()  # stdin stays open: its end would be a quit
            reader.join(PATIENCE)
            assert slow.wait(PATIENCE) == 1
            err = slow.stderr.read()
            assert err.strip().splitlines() == [f"udpchat-client: {SLOW_DETAIL}"], err
        finally:
            stop(slow)

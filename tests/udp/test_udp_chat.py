"""The UDP server and client over real sockets on loopback."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.fanout import SLOW_DETAIL
from common.session.opener import hello as hello_datagram
from common.wire.errors import ErrorCode
from common.wire.framing import decode_datagram, encode
from tests.udp.harness import PATIENCE, Member, members, python, raw_session, stop
from twinchat.frontend import ConnectError
from udpchat.client import udp_connect
from udpchat.lossyproxy import Impairment, LossyProxy
from udpchat.server import ChatServer


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer(port=0, rate_limit=0)
    srv.start()
    yield srv
    srv.shutdown()


def _say_all(member: Member, count: int, size: int = 0) -> list[str]:
    texts = [f"{member.nick} {i} " + "x" * size for i in range(count)]
    for text in texts:
        member.link.send(ev.Say(LOBBY, text))
    return texts


def test_every_member_sees_the_others_in_one_order(server: ChatServer) -> None:
    with members(server.address, "ann", "bob", "cat") as (ann, bob, cat):
        sent = {m.nick: _say_all(m, 200) for m in (ann, bob, cat)}
        for m in (ann, bob, cat):
            # Everyone's messages, its own echoed back among them.
            assert m.wait_for(lambda m: all(len(m.texts(n)) == 200 for n in sent))
            for nick, texts in sent.items():
                assert m.texts(nick) == texts
        # One total order: every member saw the same messages in the same
        # order, numbered as they came.
        views = [[(e.sender, e.text) for e in m.shared() if isinstance(e, ev.Message)] for m in (ann, bob, cat)]
        assert views[0] == views[1] == views[2]
        assert ann.seqs(LOBBY) == bob.seqs(LOBBY) == cat.seqs(LOBBY) == list(range(1, 601))


def test_twenty_percent_loss_each_way_still_delivers_everything_once_in_order(server: ChatServer) -> None:
    lossy = Impairment(loss=0.2, duplicate=0.02, reorder=0.05)
    with LossyProxy(server.address, up=lossy, down=lossy, seed=42) as proxy:
        with members(proxy.address, "ann", "bob", "cat") as (ann, bob, cat):
            sent = {m.nick: _say_all(m, 150) for m in (ann, bob)}
            sent["ann"].append("long " + "L" * 3990)
            ann.link.send(ev.Say(LOBBY, sent["ann"][-1]))
            assert cat.wait_for(lambda m: len(m.texts("ann")) == 151 and len(m.texts("bob")) == 150)
            assert bob.wait_for(lambda m: len(m.texts("ann")) == 151)
            assert cat.texts("ann") == sent["ann"]
            assert cat.texts("bob") == sent["bob"]
            assert bob.texts("ann") == sent["ann"]
            assert ann.wait_for(lambda m: len(m.texts("bob")) == 150)
            assert ann.texts("bob") == sent["bob"]
        assert proxy.stats.dropped > 0


def test_a_4000_byte_message_arrives_whole(server: ChatServer) -> None:
    text = "é" * 1000 + "z" * 2000  # 4000 bytes of UTF-8
    assert len(text.encode()) == 4000
    with members(server.address, "ann", "bob") as (ann, bob):
        ann.link.send(ev.Say(LOBBY, text))
        assert bob.wait_for(lambda m: bool(m.texts("ann")))
        assert bob.texts("ann") == [text]


def test_garbage_and_spoofed_datagrams_change_nothing(server: ChatServer) -> None:
    with members(server.address, "ann", "bob") as (ann, bob):
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        attacker.bind(("127.0.0.1", 0))
        try:
            say = encode(ev.Data(0, 0, encode(ev.Say(LOBBY, "forged"))))
            goodbye = encode(ev.Data(0, 0, encode(ev.Goodbye("forged"))))
            junk = [
                b"",
                b"\x00" * 50,
                b"hello there",
                b"\xc1\x54\x01",  # a header cut short
                encode(ev.Say(LOBBY, "no session"))[:-2],  # truncated frame
                b"\xc1\x54\x01\x63" + b"\xff" * 2000,  # oversize
                b"".join([encode(ev.Session(12345)), say]),  # unknown token
                b"".join([encode(ev.Session(ann.link.token)), goodbye]),  # known token, wrong address
                b"".join([encode(ev.Session(bob.link.token)), say]),
                encode(ev.Hello(b"\x00" * 20, b"\x00" * 1168)),  # a forged cookie, padded to 1200
                encode(ev.Say(LOBBY, "a chat frame outside any session")),
            ]
            for datagram in junk:
                attacker.sendto(datagram, server.address)
            # The server handles datagrams in order: once ann's next message
            # reached bob, every junk datagram had been judged.
            ann.link.send(ev.Say(LOBBY, "still here"))
            assert bob.wait_for(lambda m: "still here" in m.texts("ann"))
            assert ann.wait_for(lambda m: "still here" in m.texts("ann"))
        finally:
            attacker.close()
        assert bob.texts("ann") == ["still here"]
        assert ann.texts() == ["still here"]  # her own, echoed; nothing forged
        assert not ann.has(ev.Left) and not bob.has(ev.Left)
        assert ann.closed is None and bob.closed is None
        assert server.peer_count() == 2
        counted = server.counters
        assert counted["garbage"] >= 5 and counted["spoofed"] == 3 and counted["bad cookie"] == 1
        assert counted["unexpected"] == 1


def test_a_short_hello_is_never_answered(server: ChatServer) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(PATIENCE)
    try:
        sock.sendto(encode(ev.Hello(b"", b"")), server.address)
        sock.sendto(hello_datagram(b""), server.address)
        # Loopback delivers in order and the server answers in order: had the
        # short Hello been answered, that answer would be first and a second
        # datagram would be waiting now.
        reply = decode_datagram(sock.recv(2048))
        assert isinstance(reply[0], ev.Cookie)
        assert len(encode(reply[0])) < 1200
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(2048)
    finally:
        sock.close()
    assert server.counters["short hello"] == 1


def test_a_peer_that_never_acknowledges_is_dropped_as_slow_with_a_leave_notice() -> None:
    srv = ChatServer(port=0, rate_limit=0, max_queue=60_000)
    srv.start()
    try:
        mute, token = raw_session(srv.address)
        try:
            mute.sendto(
                b"".join([encode(ev.Session(token)), encode(ev.Data(0, 0, encode(ev.Register("mute"))))]),
                srv.address,
            )
            with members(srv.address, "ann", "bob") as (ann, bob):
                assert ann.wait_for(lambda m: m.has(ev.Joined, nick="bob"))
                # mute never acks: its window fills, then its backlog overflows.
                # In rounds that bob, and ann who hears her own lines back, see
                # through before the next one, so neither (both acknowledge)
                # lags by more than a round (~21 kB), while mute's backlog
                # grows past the 60 kB bound.
                for round_ in range(10):
                    for i in range(300):
                        ann.link.send(ev.Say(LOBBY, f"{round_}/{i} " + "x" * 30))
                    for m in (bob, ann):
                        assert m.wait_for(lambda m, n=300 * (round_ + 1): len(m.texts("ann")) == n)
                assert bob.wait_for(lambda m: m.has(ev.Left, nick="mute"))
                # Dropped by the fan-out's slow-consumer policy, and for nothing else.
                assert bob.has(ev.Left, nick="mute", reason=SLOW_DETAIL)
                assert ann.has(ev.Left, nick="mute", reason=SLOW_DETAIL)
        finally:
            mute.close()
    finally:
        srv.shutdown()


def test_a_refused_nick_and_a_full_server_raise_connect_error() -> None:
    srv = ChatServer(port=0, rate_limit=0, max_clients=2)
    srv.start()
    try:
        with members(srv.address, "ann") as (ann,):
            with pytest.raises(ConnectError, match="nick-taken"):
                Member(srv.address, "ANN")
            with pytest.raises(ConnectError, match="bad-nick"):
                Member(srv.address, "-dash")
            bob = Member(srv.address, "bob")
            try:
                with pytest.raises(ConnectError, match="server-full"):
                    Member(srv.address, "cat")
            finally:
                bob.link.close()
            assert ann.wait_for(lambda m: m.has(ev.Left, nick="bob"))
    finally:
        srv.shutdown()


def test_a_server_that_never_answers_is_a_connect_error() -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(ConnectError, match="did not answer"):
            udp_connect("127.0.0.1", silent.getsockname()[1], "ann", print, print, timeout=0.5)
    finally:
        silent.close()


def test_goodbye_leaves_at_once_and_close_waits_for_the_server(server: ChatServer) -> None:
    with members(server.address, "ann", "bob") as (ann, bob):
        texts = _say_all(ann, 300)
        ann.link.close("gone fishing")
        # close() returned: the server had everything before the goodbye.
        assert ann.link.flushed
        assert ann.closed is not None
        assert bob.wait_for(lambda m: m.has(ev.Left, nick="ann"))
        assert bob.texts("ann") == texts
        assert bob.has(ev.Left, nick="ann", reason="gone fishing")


def test_unreliable_mode_delivers_on_a_clean_link() -> None:
    srv = ChatServer(port=0, rate_limit=0, unreliable=True)
    srv.start()
    try:
        with members(srv.address, "ann", "bob") as (ann, bob):
            assert ann.link.unreliable and bob.link.unreliable
            ann.link.send(ev.Say(LOBBY, "fire and forget"))
            assert bob.wait_for(lambda m: bool(m.texts("ann")))
            assert bob.texts("ann") == ["fire and forget"]
            assert ann.link.channel.retransmits == 0
    finally:
        srv.shutdown()


# --- processes -------------------------------------------------------------------


def test_a_killed_client_expires_and_the_others_are_told() -> None:
    srv = ChatServer(port=0, rate_limit=0, idle_timeout=1.0)
    srv.start()
    host, port = srv.address
    victim = python(
        "-m", "udpchat.client", "--host", host, "--port", str(port), "--nick", "victim",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        with members(srv.address, "ann") as (ann,):
            assert ann.wait_for(lambda m: m.has(ev.Joined, nick="victim"))
            victim.send_signal(signal.SIGKILL)
            assert ann.wait_for(lambda m: m.has(ev.Left, nick="victim"))
            assert ann.closed is None
    finally:
        stop(victim)
        srv.shutdown()


# A script's first lines must wait until the server has put the client in the
# lobby (udp_connect returns before it even hands on the Welcome): read at once,
# they would be refused with NOT_IN_ROOM. Without the wait this failed about one
# run in six.
def test_plain_client_at_eof_delivers_everything_says_goodbye_and_exits_0(server: ChatServer) -> None:
    host, port = server.address
    lines = [f"line {i}" for i in range(200)] + ["/me waves", "last " + "w" * 3000]
    with members(server.address, "ann") as (ann,):
        proc = python(
            "-m", "udpchat.client", "--host", host, "--port", str(port), "--nick", "piper",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = proc.communicate("\n".join(lines) + "\n", timeout=PATIENCE)
        finally:
            stop(proc)
        assert proc.returncode == 0, err
        assert out.startswith("*** welcome, piper")
        assert ann.wait_for(lambda m: m.has(ev.Left, nick="piper"))
        assert ann.texts("piper") == [line for line in lines if not line.startswith("/")]
        assert ann.has(ev.Action, sender="piper", text="waves")


def test_plain_client_refused_nick_is_one_line_on_stderr_and_nonzero(server: ChatServer) -> None:
    host, port = server.address
    with members(server.address, "ann"):
        proc = python(
            "-m", "udpchat.client", "--host", host, "--port", str(port), "--nick", "ann", "--nick-retries", "0",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            _, err = proc.communicate("", timeout=PATIENCE)
        finally:
            stop(proc)
    assert proc.returncode != 0
    assert len(err.strip().splitlines()) == 1 and "nick-taken" in err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_server_process_says_goodbye_to_everyone_on_signal_and_exits_0(signum: int) -> None:
    proc = python(
        "-m", "udpchat.server", "--port", "0", "--log-level", "WARNING",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line
        port = int(line.split("listening on 127.0.0.1:")[1].split()[0])
        with members(("127.0.0.1", port), "ann", "bob") as (ann, bob):
            proc.send_signal(signum)
            for m in (ann, bob):
                assert m.wait_for(lambda m: m.closed is not None)
                assert m.has(ev.Error, code=ErrorCode.SHUTTING_DOWN)
                assert m.has(ev.Goodbye)
        assert proc.wait(timeout=PATIENCE) == 0
    finally:
        stop(proc)


def test_rate_limited_messages_are_held_in_order_not_lost() -> None:
    srv = ChatServer(port=0, rate_limit=100)  # bursts of 200, then 100 per second
    srv.start()
    try:
        with members(srv.address, "ann", "bob") as (ann, bob):
            texts = _say_all(ann, 300)
            assert bob.wait_for(lambda m: len(m.texts("ann")) == 300)
            assert bob.texts("ann") == texts
    finally:
        srv.shutdown()


def test_a_flood_past_what_the_rate_limit_holds_is_dropped() -> None:
    srv = ChatServer(port=0, rate_limit=1)
    srv.start()
    try:
        with members(srv.address, "ann", "bob") as (ann, bob):
            _say_all(ann, 4500)
            assert ann.wait_for(lambda m: m.has(ev.Error, code=ErrorCode.RATE_LIMITED))
            assert bob.wait_for(lambda m: m.has(ev.Left, nick="ann"))
            assert srv.counters["flooding"] == 1
    finally:
        srv.shutdown()


def test_an_idle_client_is_kept_alive_by_keepalives() -> None:
    # Keepalives every 0.1 s; bob's client would not send one for 5 s by itself.
    srv = ChatServer(port=0, rate_limit=0, idle_timeout=0.4)
    srv.start()
    try:
        with members(srv.address, "ann", "bob") as (ann, bob):
            # Waiting for what must not happen, for several idle timeouts.
            assert not ann.wait_for(lambda m: m.has(ev.Left), timeout=2.0)
            assert srv.counters["expired"] == 0
            bob.link.send(ev.Say(LOBBY, "still here"))
            assert ann.wait_for(lambda m: m.texts("bob") == ["still here"])
    finally:
        srv.shutdown()


def test_the_client_notices_a_killed_server() -> None:
    proc = python(
        "-m", "udpchat.server", "--port", "0", "--log-level", "WARNING",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split("listening on 127.0.0.1:")[1].split()[0])
        ann = Member(("127.0.0.1", port), "ann", keepalive_after=0.1, dead_after=1.0)
        try:
            proc.send_signal(signal.SIGKILL)
            assert ann.wait_for(lambda m: m.closed is not None)
            assert ann.closed == "the server stopped answering"
        finally:
            ann.link.close()
    finally:
        stop(proc)


def test_unreliable_mode_at_twenty_percent_loss_joins_loses_some_and_never_duplicates() -> None:
    srv = ChatServer(port=0, rate_limit=0, unreliable=True)
    srv.start()
    lossy = Impairment(loss=0.2, duplicate=0.05)  # no reordering: the path stays FIFO
    try:
        with (
            LossyProxy(srv.address, up=lossy, down=lossy, seed=7) as proxy,
            members(proxy.address, "ann", "bob", see_joins=False) as (ann, bob),
        ):
            sent = _say_all(ann, 600)  # some 50 datagrams each way: all through at 20% loss is a 1e-5 chance
            # A FIFO path: once a marker is through, whatever came before it
            # arrived or is lost for good.
            for attempt in range(100):
                ann.link.send(ev.Say(LOBBY, f"end {attempt}"))
                if bob.wait_for(lambda m: any(t.startswith("end ") for t in m.texts("ann")), timeout=0.2):
                    break
            got = [t for t in bob.texts("ann") if not t.startswith("end ")]
            assert len(set(got)) == len(got), "a message was delivered twice"
            assert got == [t for t in sent if t in set(got)], "out of order on a FIFO path"
            assert 0 < len(got) < len(sent)
            assert ann.link.channel.retransmits == 0
            bob_lost = bob.link.channel.lost
        srv.shutdown()
        # Each missing message was lost on one of the two legs, before an end
        # marker that got through: a gap bob counted, or one the server counted
        # in ann's session.
        assert bob_lost + srv.counters["lost segments"] > 0
    finally:
        srv.shutdown()


def test_lossy_proxy_command_relays_and_stops_on_sigterm(server: ChatServer) -> None:
    host, port = server.address
    proc = python(
        "-m", "udpchat.lossyproxy", "--target", f"{host}:{port}", "--loss", "0", "--seed", "3",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in line
        proxy_port = int(line.split("listening on 127.0.0.1:")[1].split(",")[0])
        with members(("127.0.0.1", proxy_port), "ann", "bob") as (ann, bob):
            ann.link.send(ev.Say(LOBBY, "via the proxy"))
            assert bob.wait_for(lambda m: m.texts("ann") == ["via the proxy"])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=PATIENCE)
        assert proc.returncode == 0
        assert "dropped=0" in err and "forwarded=" in err
    finally:
        stop(proc)


def test_a_failing_callback_ends_the_link_cleanly(server: ChatServer) -> None:
    closed: list[str] = []
    done = threading.Event()

    def on_event(event: ev.ServerEvent) -> None:
        if isinstance(event, ev.Message):
            raise RuntimeError("front end bug")

    def on_closed(reason: str) -> None:
        closed.append(reason)
        done.set()

    link = udp_connect(*server.address, "fragile", on_event, on_closed)
    try:
        with members(server.address, "ann") as (ann,):
            ann.link.send(ev.Say(LOBBY, "boom"))
            assert done.wait(PATIENCE)
            assert closed == ["client error: RuntimeError('front end bug')"]
            link.close()
            # The server is told at once, not after its idle timeout.
            assert ann.wait_for(lambda m: m.has(ev.Left, nick="fragile"))
    finally:
        link.close()
    assert closed == ["client error: RuntimeError('front end bug')"]

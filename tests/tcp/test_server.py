"""The TCP server over real loopback sockets: chat, order, limits, faults, timers."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable

import pytest

from common.chat import events as ev
from common.wire.errors import ErrorCode, RemoteProtocolError
from common.wire.framing import HEADER, MAGIC, VERSION, FrameType, encode
from common.wire.limits import MAX_FRAME, MAX_TEXT
from tcpchat.server import ChatServer

from .conftest import WAIT, FramedClient, LineClient

MakeServer = Callable[..., ChatServer]
MakeClient = Callable[..., FramedClient]
MakeLine = Callable[[tuple[str, int]], LineClient]


def raw_frame(ftype: int, payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, VERSION, ftype, len(payload)) + payload


def text_field(raw: bytes) -> bytes:
    return struct.pack(">H", len(raw)) + raw


def assert_closed_after_goodbye(client: FramedClient, code: ErrorCode) -> None:
    error = client.expect(ev.Error)
    assert error.code is code
    client.expect(ev.Goodbye)
    assert client.next() is None


# --- chatting ------------------------------------------------------------------


def test_many_clients_get_every_message_once_in_one_order(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    count, per_client = 8, 150
    members = [clients(server.address) for _ in range(count)]
    for i, member in enumerate(members):
        member.register(f"user{i}")
    # Everyone has seen everyone join once the last join reached the first member.
    for i, member in enumerate(members):
        for _ in range(count - 1 - i):
            member.expect(ev.Joined)
    seen: list[list[tuple[str, str]]] = [[] for _ in members]
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def chat(i: int) -> None:
        try:
            member = members[i]
            start.wait(WAIT)
            member.send(*(ev.Say(f"{i}/{n}") for n in range(per_client)))
            while len(seen[i]) < (count - 1) * per_client:
                message = member.expect(ev.Message)
                seen[i].append((message.sender, message.text))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    assert not failures
    assert not any(thread.is_alive() for thread in threads)
    for i, view in enumerate(seen):
        expected = {(f"user{j}", f"{j}/{n}") for j in range(count) if j != i for n in range(per_client)}
        assert Counter(view) == Counter(expected)  # every message once, none of one's own
    for i in range(count):
        for j in range(i + 1, count):
            skip = {f"user{i}", f"user{j}"}
            common_i = [m for m in seen[i] if m[0] not in skip]
            common_j = [m for m in seen[j] if m[0] not in skip]
            assert common_i == common_j  # one total order


@pytest.mark.parametrize("text", ["plain", "Привет, мир", "emoji 👋🏽 and 家族"])
def test_frames_split_at_every_byte(make_server: MakeServer, clients: MakeClient, text: str) -> None:
    server = make_server()
    alice, bob = clients(server.address), clients(server.address)
    bob.register("bob")
    alice.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    events = [ev.Register("Алиса"), ev.Say(text), ev.Act(text), ev.Whisper("bob", text)]
    stream = b"".join(encode(e) for e in events)
    for i in range(len(stream)):
        alice.send_raw(stream[i : i + 1])
    assert alice.expect(ev.Welcome).nick == "Алиса"
    assert bob.expect(ev.Joined) == ev.Joined("Алиса")
    assert bob.expect(ev.Message) == ev.Message("Алиса", text)
    assert bob.expect(ev.Action) == ev.Action("Алиса", text)
    assert bob.expect(ev.Private) == ev.Private("Алиса", text)


def test_many_frames_in_one_write(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob = clients(server.address), clients(server.address)
    bob.register("bob")
    alice.send(ev.Register("alice"), *(ev.Say(f"m{n} 😀") for n in range(1000)))
    bob.expect(ev.Joined)
    assert [bob.expect(ev.Message).text for _ in range(1000)] == [f"m{n} 😀" for n in range(1000)]


def test_private_messages_reach_only_their_target(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob, carol = (clients(server.address) for _ in range(3))
    alice.register("alice")
    bob.register("bob")
    carol.register("carol")
    alice.send(ev.Whisper("BOB", "for bob only"), ev.Whisper("nobody", "lost"), ev.Say("public"))
    assert [alice.expect(ev.Joined).nick for _ in range(2)] == ["bob", "carol"]
    assert alice.expect(ev.Error).code is ErrorCode.NO_SUCH_NICK
    assert bob.expect(ev.Joined) == ev.Joined("carol")
    assert bob.expect(ev.Private) == ev.Private("alice", "for bob only")
    assert bob.expect(ev.Message) == ev.Message("alice", "public")
    assert carol.expect(ev.Message) == ev.Message("alice", "public")  # and no Private before it


def test_who_lists_everyone(make_server: MakeServer, clients: MakeClient, line_clients: MakeLine) -> None:
    server = make_server()
    alice = clients(server.address)
    alice.register("alice")
    nc = line_clients(server.address)
    nc.send("Маша\n".encode())
    assert nc.line().startswith("*** welcome, Маша")
    alice.send(ev.Who())
    alice.expect(ev.Joined)
    assert alice.expect(ev.WhoReply) == ev.WhoReply(("alice", "Маша"), more=False)
    nc.send(b"/who\n")
    assert nc.line() == "* online: alice, Маша"


def test_nick_change_is_announced(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob = clients(server.address), clients(server.address)
    alice.register("alice")
    bob.register("bob")
    alice.expect(ev.Joined)
    bob.send(ev.ChangeNick("robert"), ev.Say("hi"))
    assert alice.expect(ev.Renamed) == ev.Renamed("bob", "robert")
    assert alice.expect(ev.Message) == ev.Message("robert", "hi")


# --- registration ----------------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), [("Маша", "маша"), ("STRASSE", "straße"), ("bob", "BOB")])
def test_duplicate_nick_closes_a_framed_client(
    make_server: MakeServer, clients: MakeClient, first: str, second: str
) -> None:
    server = make_server()
    clients(server.address).register(first)
    late = clients(server.address)
    late.send(ev.Register(second))
    assert_closed_after_goodbye(late, ErrorCode.NICK_TAKEN)


@pytest.mark.parametrize("nick", ["1abc", "-dash", "has space", "a.b"])
def test_invalid_nick_closes_a_framed_client(make_server: MakeServer, clients: MakeClient, nick: str) -> None:
    server = make_server()
    client = clients(server.address)
    client.send(ev.Register(nick))
    assert_closed_after_goodbye(client, ErrorCode.BAD_NICK)


def test_line_client_may_retry_a_refused_nick(
    make_server: MakeServer, clients: MakeClient, line_clients: MakeLine
) -> None:
    server = make_server()
    clients(server.address).register("alice")
    nc = line_clients(server.address)
    nc.send(b"ALICE\r\n")
    assert nc.line().startswith("* error (nick-taken):")
    nc.send(b"9lives\n")
    assert nc.line().startswith("* error (bad-nick):")
    nc.send(b"x" * 40 + b"\n")
    assert nc.line().startswith("* error (bad-nick):")
    nc.send(b"bob\r\n")
    assert nc.line() == "*** welcome, bob: 1 other online"


def test_registration_timeout(make_server: MakeServer, clients: MakeClient, line_clients: MakeLine) -> None:
    server = make_server(register_timeout=0.3)
    silent = clients(server.address)
    assert silent.next() is None  # never spoke: closed without a word (it has no dialect)
    pinger = clients(server.address)
    pinger.send(ev.Ping(7))
    assert pinger.expect(ev.Pong, skip_pings=False) == ev.Pong(7)
    assert_closed_after_goodbye(pinger, ErrorCode.REGISTRATION_TIMEOUT)
    nc = line_clients(server.address)
    nc.send(b"\n")  # a blank line is no nick
    assert nc.line().startswith("* error (registration-timeout):")
    assert nc.line().startswith("*** disconnected")
    assert nc.line() == ""


def test_max_clients_refuses_extras(make_server: MakeServer, clients: MakeClient, line_clients: MakeLine) -> None:
    server = make_server(max_clients=2)
    clients(server.address).register("a")
    clients(server.address).register("b")
    extra = clients(server.address)
    extra.send(ev.Register("c"))
    assert_closed_after_goodbye(extra, ErrorCode.SERVER_FULL)
    nc = line_clients(server.address)
    nc.send(b"d\n")
    assert nc.line().startswith("* error (server-full):")
    assert nc.line().startswith("*** disconnected")
    assert nc.line() == ""


# --- limits and garbage --------------------------------------------------------------


def test_oversize_text_is_refused_and_the_connection_stays(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob = clients(server.address), clients(server.address)
    alice.register("alice")
    bob.register("bob")
    alice.expect(ev.Joined)
    alice.send_raw(raw_frame(FrameType.SAY, text_field(b"a" * (MAX_TEXT + 1))))
    assert alice.expect(ev.Error).code is ErrorCode.TEXT_TOO_LONG
    alice.send_raw(raw_frame(FrameType.SAY, text_field(b"bad \xff\xfe utf-8")))
    assert alice.expect(ev.Error).code is ErrorCode.BAD_UTF8
    alice.send(ev.Say("b" * MAX_TEXT))
    assert bob.expect(ev.Message) == ev.Message("alice", "b" * MAX_TEXT)


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (HEADER.pack(MAGIC, VERSION, FrameType.SAY, MAX_FRAME), ErrorCode.FRAME_TOO_LARGE),
        (b"\xc1\x55 not a frame", ErrorCode.BAD_MAGIC),
        (HEADER.pack(MAGIC, 9, FrameType.SAY, 0), ErrorCode.BAD_VERSION),
    ],
)
def test_broken_stream_is_closed_and_others_told(
    make_server: MakeServer, clients: MakeClient, garbage: bytes, code: ErrorCode
) -> None:
    server = make_server()
    alice, bob = clients(server.address), clients(server.address)
    alice.register("alice")
    bob.register("bob")
    alice.expect(ev.Joined)
    bob.send_raw(garbage)
    assert_closed_after_goodbye(bob, code)
    assert alice.expect(ev.Left).nick == "bob"


def test_unexpected_frames_are_refused(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice = clients(server.address)
    alice.send(ev.Say("too early"))
    assert alice.expect(ev.Error).code is ErrorCode.NOT_REGISTERED
    alice.register("alice")
    alice.send(ev.Welcome("alice", 1), ev.Who())
    assert alice.expect(ev.Error).code is ErrorCode.UNEXPECTED_FRAME
    assert alice.expect(ev.WhoReply).nicks == ("alice",)
    alice.send_raw(raw_frame(0x7F, b"") + encode(ev.Who()))
    assert alice.expect(ev.Error).code is ErrorCode.UNKNOWN_FRAME
    assert alice.expect(ev.WhoReply).nicks == ("alice",)


def test_line_dialect_limits_and_bad_utf8(make_server: MakeServer, clients: MakeClient, line_clients: MakeLine) -> None:
    server = make_server()
    alice = clients(server.address)
    alice.register("alice")
    nc = line_clients(server.address)
    nc.send(b"bob\n\xff\xfe\n" + b"c" * (MAX_TEXT + 1) + b"\n/bogus\n/msg\nstill here\n")
    assert nc.line().startswith("*** welcome, bob")
    assert nc.line().startswith("* error (bad-utf8):")
    assert nc.line().startswith("* error (text-too-long):")
    assert nc.line().startswith("* error (unknown-command):")
    assert nc.line().startswith("* error (bad-usage):")
    alice.expect(ev.Joined)
    assert alice.expect(ev.Message) == ev.Message("bob", "still here")
    nc.send(b"x" * (MAX_FRAME + 10))  # one line past the hard cap, no newline yet
    assert nc.line().startswith("* error (frame-too-large):")
    assert nc.line().startswith("*** disconnected")
    assert nc.line() == ""
    assert alice.expect(ev.Left).nick == "bob"


# --- the line dialect, as nc would use it ---------------------------------------------


def test_line_dialect_session(make_server: MakeServer, clients: MakeClient, line_clients: MakeLine) -> None:
    server = make_server()
    alice = clients(server.address)
    alice.register("alice")
    nc = line_clients(server.address)
    raw = "bob\r\nпривет 👋\n/me waves\r\n//slash\n\n/msg alice psst\n/nick bobby\n".encode()
    for i in range(len(raw)):  # split everywhere, mid-character included
        nc.send(raw[i : i + 1])
    assert nc.line() == "*** welcome, bob: 1 other online"
    assert alice.expect(ev.Joined) == ev.Joined("bob")
    assert alice.expect(ev.Message) == ev.Message("bob", "привет 👋")
    assert alice.expect(ev.Action) == ev.Action("bob", "waves")
    assert alice.expect(ev.Message) == ev.Message("bob", "/slash")
    assert alice.expect(ev.Private) == ev.Private("bob", "psst")
    assert alice.expect(ev.Renamed) == ev.Renamed("bob", "bobby")
    assert nc.line() == "*** bob is now known as bobby"
    alice.send(ev.Say("hi bob"), ev.Act("smiles"), ev.Whisper("bobby", "secret"))
    assert nc.line() == "alice: hi bob"
    assert nc.line() == "* alice smiles"
    assert nc.line() == "*alice* secret"
    nc.send(b"/help\n")
    assert nc.line().startswith("* /nick NEW")
    while not (line := nc.line()).startswith("* //text"):
        assert line.startswith("* /")
    nc.send(b"/quit gone fishing\n")
    assert nc.line() == "*** disconnected: bye"
    assert nc.line() == ""
    assert alice.expect(ev.Left) == ev.Left("bobby", "gone fishing")


def test_half_closed_line_client_still_gets_its_answers(
    make_server: MakeServer, clients: MakeClient, line_clients: MakeLine
) -> None:
    server = make_server()
    alice = clients(server.address)
    alice.register("alice")
    nc = line_clients(server.address)
    nc.send(b"bob\nlast words")  # no newline: the end of the stream ends the line
    nc.sock.shutdown(socket.SHUT_WR)
    assert nc.line() == "*** welcome, bob: 1 other online"
    assert nc.line() == ""
    alice.expect(ev.Joined)
    assert alice.expect(ev.Message) == ev.Message("bob", "last words")
    assert alice.expect(ev.Left).nick == "bob"


# --- faults ---------------------------------------------------------------------------


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_abrupt_reset_is_a_leave(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob = clients(server.address), clients(server.address)
    alice.register("alice")
    bob.register("bob")
    alice.expect(ev.Joined)
    bob.send(ev.Say("bye"))
    reset(bob.sock)
    assert alice.expect(ev.Message).text == "bye"
    left = alice.expect(ev.Left)
    assert left.nick == "bob"
    carol = clients(server.address)
    carol.register("bob")  # the nick is free again and the server still serves


def test_resets_before_accept_do_not_hurt(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    for _ in range(30):
        sock = socket.create_connection(server.address, timeout=WAIT)
        reset(sock)
    alice, bob = clients(server.address), clients(server.address)
    alice.register("alice")
    bob.register("bob")
    bob.send(ev.Say("still up"))
    alice.expect(ev.Joined)
    assert alice.expect(ev.Message).text == "still up"


def test_stuck_reader_is_cut_off_and_nobody_else_waits(make_server: MakeServer, clients: MakeClient) -> None:
    max_queue = 256 * 1024
    server = make_server(max_queue=max_queue)
    stuck = clients(server.address, rcvbuf=4096)
    stuck.register("stuck")
    talkers = [clients(server.address), clients(server.address)]
    talkers[0].register("ann")
    talkers[1].register("ben")
    talkers[0].expect(ev.Joined)
    per_talker = 10_000  # 20,000 messages exchanged in all
    text = "x" * 500
    received: list[list[str]] = [[], []]
    left: list[list[ev.Left]] = [[], []]
    failures: list[BaseException] = []

    def listen(i: int) -> None:
        try:
            while len(received[i]) < per_talker or not left[i]:
                event = talkers[i].expect(ev.Event)
                if isinstance(event, ev.Message):
                    received[i].append(event.text)
                elif isinstance(event, ev.Left):
                    left[i].append(event)
        except BaseException as exc:
            failures.append(exc)

    listeners = [threading.Thread(target=listen, args=(i,)) for i in range(2)]
    for thread in listeners:
        thread.start()
    for i, talker in enumerate(talkers):
        talker.send(*(ev.Say(f"{i}:{n}:{text}") for n in range(per_talker)))
    for thread in listeners:
        thread.join(WAIT * 2)
    assert not failures
    assert not any(thread.is_alive() for thread in listeners)
    for i in range(2):
        other = 1 - i
        assert received[i] == [f"{other}:{n}:{text}" for n in range(per_talker)]
        assert [e.nick for e in left[i]] == ["stuck"]
    assert server.peak_queued <= max_queue
    # The stuck client gets a part of the chat, then its stream is cut.
    got = 0
    with pytest.raises((ConnectionResetError, RemoteProtocolError)):
        while (event := stuck.next()) is not None:
            got += isinstance(event, ev.Message)
        raise ConnectionResetError("closed between frames")
    assert got < 2 * per_talker


def test_idle_clients_are_pinged_then_dropped(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server(idle_timeout=1.0)
    silent, lively = clients(server.address), clients(server.address)
    silent.register("silent")
    lively.register("lively")
    # lively answers its own pings while it waits; silent's events wait in its buffer.
    assert lively.expect(ev.Left).nick == "silent"
    assert isinstance(silent.expect(ev.Joined), ev.Joined)
    assert isinstance(silent.expect(ev.Ping, skip_pings=False), ev.Ping)
    assert_closed_after_goodbye(silent, ErrorCode.IDLE_TIMEOUT)
    lively.send(ev.Who())
    assert lively.expect(ev.WhoReply).nicks == ("lively",)


def test_flood_is_slowed_not_lost(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server(rate_limit=200.0)
    flooder, reader = clients(server.address), clients(server.address)
    flooder.register("flooder")
    reader.register("reader")
    flooder.send(*(ev.Say(f"n{n}") for n in range(600)))  # burst 400, then 200/s
    assert [reader.expect(ev.Message).text for _ in range(600)] == [f"n{n}" for n in range(600)]
    flooder.send(ev.Who())
    assert flooder.expect(ev.Joined).nick == "reader"
    assert flooder.expect(ev.WhoReply).nicks == ("flooder", "reader")


def test_private_messages_are_never_logged(
    make_server: MakeServer, clients: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tcpchat.server")
    server = make_server()
    alice, bob = clients(server.address), clients(server.address)
    alice.register("alice")
    bob.register("bob")
    alice.send(ev.Whisper("bob", "the-secret-word"))
    assert bob.expect(ev.Private).text == "the-secret-word"
    bob.send(ev.Goodbye("done"))
    bob.until_closed()
    server.shutdown()  # joins every thread: all is logged
    assert "registered as alice" in caplog.text
    assert "disconnected" in caplog.text
    assert "the-secret-word" not in caplog.text


def test_shutdown_says_goodbye_to_everyone(
    make_server: MakeServer, clients: MakeClient, line_clients: MakeLine
) -> None:
    server = make_server()
    alice = clients(server.address)
    alice.register("alice")
    pending = clients(server.address)
    pending.send(ev.Ping(1))
    pending.expect(ev.Pong, skip_pings=False)
    nc = line_clients(server.address)
    nc.send(b"bob\n")
    assert nc.line().startswith("*** welcome")
    server.shutdown()
    for client in (alice, pending):
        events = client.until_closed()
        assert events[-2:] == [
            ev.Error(ErrorCode.SHUTTING_DOWN, "the server is shutting down"),
            ev.Goodbye("the server is shutting down"),
        ]
    rest = []
    while line := nc.line():
        rest.append(line)
    assert rest[-2:] == [
        "* error (shutting-down): the server is shutting down",
        "*** disconnected: the server is shutting down",
    ]


def test_huge_idle_timeout_still_accepts(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server(idle_timeout=3600 * 24 * 365)  # past what TCP keepalive can be told
    assert clients(server.address).register("alice") == ev.Welcome("alice", 1)


def test_shutdown_before_serving_is_clean() -> None:
    server = ChatServer("127.0.0.1", 0)
    server.shutdown()
    server.serve_forever()  # returns at once: the server is shut already


def test_a_client_held_back_by_flood_control_is_not_idle(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server(rate_limit=50.0, idle_timeout=1.0)
    flooder, reader = clients(server.address), clients(server.address)
    flooder.register("flooder")
    reader.register("reader")
    flooder.send(*(ev.Say(f"n{n}") for n in range(200)))  # a burst of 128, then 1.4 s at 50/s
    assert [reader.expect(ev.Message).text for _ in range(200)] == [f"n{n}" for n in range(200)]
    flooder.send(ev.Who())
    assert flooder.expect(ev.Joined).nick == "reader"
    assert flooder.expect(ev.WhoReply).nicks == ("flooder", "reader")


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_loopback(clients: MakeClient) -> None:
    try:
        server = ChatServer("::1", 0, rate_limit=0)
    except OSError as exc:
        pytest.skip(f"::1 unavailable: {exc}")
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        alice, bob = clients(server.address), clients(server.address)
        alice.register("alice")
        bob.register("bob")
        bob.send(ev.Say("over v6"))
        alice.expect(ev.Joined)
        assert alice.expect(ev.Message) == ev.Message("bob", "over v6")
    finally:
        server.shutdown()
        thread.join(WAIT)

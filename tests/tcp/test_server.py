"""The TCP server over real loopback sockets: chat, order, limits, faults, timers."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

import tcpchat.server
from common.chat import events as ev
from common.chat.commands import HELP_LINES
from common.chat.rooms import LOBBY
from common.fanout import SLOW_DETAIL
from common.wire.errors import ErrorCode
from common.wire.framing import HEADER, MAGIC, VERSION, FrameType, encode
from common.wire.limits import MAX_FRAME, MAX_TEXT
from tcpchat.server import ChatServer

from .conftest import WAIT, FramedClient, LineClient, bare

MakeServer = Callable[..., ChatServer]
MakeClient = Callable[..., FramedClient]
MakeLine = Callable[[tuple[str, int]], LineClient]


def raw_frame(ftype: int, payload: bytes) -> bytes:
    return HEADER.pack(MAGIC, VERSION, ftype, len(payload)) + payload


def text_field(raw: bytes) -> bytes:
    return struct.pack(">H", len(raw)) + raw


def room_field(room: str) -> bytes:
    raw = room.encode()
    return struct.pack(">B", len(raw)) + raw


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
    # Everyone has seen everyone join once the last join reached the first member
    # (its own join was the first, right after its Welcome: see register()).
    for i, member in enumerate(members):
        assert [member.expect(ev.Joined) for _ in range(count - 1 - i)] == [
            ev.Joined(LOBBY, f"user{j}") for j in range(i + 1, count)
        ]
    # Each member hears every message, its own echoed back among the others'.
    seen: list[list[tuple[int, str, str]]] = [[] for _ in members]
    start = threading.Barrier(count)
    failures: list[BaseException] = []

    def chat(i: int) -> None:
        try:
            member = members[i]
            start.wait(WAIT)
            member.send(*(ev.Say(LOBBY, f"{i}/{n}") for n in range(per_client)))
            while len(seen[i]) < count * per_client:
                message = member.expect(ev.Message)
                assert message.room == LOBBY
                assert not message.history
                seen[i].append((message.seq, message.sender, message.text))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
    assert not failures
    assert not any(thread.is_alive() for thread in threads)
    expected = Counter((f"user{j}", f"{j}/{n}") for j in range(count) for n in range(per_client))
    for view in seen:
        assert Counter((sender, text) for _, sender, text in view) == expected  # every message once, one's own too
        assert [seq for seq, _, _ in view] == list(range(1, count * per_client + 1))  # numbered as they came
    for view in seen[1:]:
        assert view == seen[0]  # one total order, the same numbers for all


@pytest.mark.parametrize("text", ["plain", "Привет, мир", "emoji 👋🏽 and 家族"])
def test_frames_split_at_every_byte(make_server: MakeServer, clients: MakeClient, text: str) -> None:
    server = make_server()
    alice, bob = clients(server.address), clients(server.address)
    bob.register("bob")
    alice.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    events = [ev.Register("Алиса"), ev.Say(LOBBY, text), ev.Act(LOBBY, text), ev.Whisper("bob", text)]
    stream = b"".join(encode(e) for e in events)
    for i in range(len(stream)):
        alice.send_raw(stream[i : i + 1])
    assert alice.expect(ev.Welcome).nick == "Алиса"
    assert alice.expect(ev.Joined) == ev.Joined(LOBBY, "Алиса")
    assert alice.briefed(LOBBY).history == []
    # alice's own message and action come back to her, numbered as bob gets them.
    message, action = alice.expect(ev.Message), alice.expect(ev.Action)
    assert (bare(message), bare(action)) == (ev.Message(LOBBY, "Алиса", text), ev.Action(LOBBY, "Алиса", text))
    assert bob.expect(ev.Joined) == ev.Joined(LOBBY, "Алиса")
    assert bob.expect(ev.Message) == message
    assert bob.expect(ev.Action) == action
    assert bare(bob.expect(ev.Private)) == ev.Private("Алиса", text)


def test_many_frames_in_one_write(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob = clients(server.address), clients(server.address)
    bob.register("bob")
    alice.send(ev.Register("alice"), *(ev.Say(LOBBY, f"m{n} 😀") for n in range(1000)))
    assert bob.expect(ev.Joined) == ev.Joined(LOBBY, "alice")
    assert [bob.expect(ev.Message).text for _ in range(1000)] == [f"m{n} 😀" for n in range(1000)]


def test_private_messages_reach_only_their_target(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob, carol = (clients(server.address) for _ in range(3))
    alice.register("alice")
    bob.register("bob")
    carol.register("carol")
    alice.send(ev.Whisper("BOB", "for bob only"), ev.Whisper("nobody", "lost"), ev.Say(LOBBY, "public"))
    assert [alice.expect(ev.Joined).nick for _ in range(2)] == ["bob", "carol"]
    assert alice.expect(ev.Error).code is ErrorCode.NO_SUCH_NICK
    assert bob.expect(ev.Joined) == ev.Joined(LOBBY, "carol")
    assert bare(alice.expect(ev.Message)) == ev.Message(LOBBY, "alice", "public")  # her echo, no Private
    assert bare(bob.expect(ev.Private)) == ev.Private("alice", "for bob only")
    assert bare(bob.expect(ev.Message)) == ev.Message(LOBBY, "alice", "public")
    assert bare(carol.expect(ev.Message)) == ev.Message(LOBBY, "alice", "public")  # and no Private before it


def test_who_lists_everyone(make_server: MakeServer, clients: MakeClient, line_clients: MakeLine) -> None:
    server = make_server()
    alice = clients(server.address)
    alice.register("alice")
    nc = line_clients(server.address)
    nc.send("Маша\n".encode())
    assert nc.line().startswith("*** welcome, Маша")
    assert nc.line() == "*** Маша joined #lobby"
    alice.send(ev.Who())
    assert alice.expect(ev.Joined) == ev.Joined(LOBBY, "Маша")
    assert alice.expect(ev.WhoReply) == ev.WhoReply("", ("alice", "Маша"), more=False)
    nc.send(b"/who\n")
    assert nc.line() == "* online: alice, Маша"


def test_nick_change_is_announced(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    alice, bob = clients(server.address), clients(server.address)
    alice.register("alice")
    bob.register("bob")
    alice.expect(ev.Joined)
    bob.send(ev.ChangeNick("robert"), ev.Say(LOBBY, "hi"))
    assert alice.expect(ev.Renamed) == ev.Renamed("bob", "robert")
    assert bare(alice.expect(ev.Message)) == ev.Message(LOBBY, "robert", "hi")
    assert bob.expect(ev.Renamed) == ev.Renamed("bob", "robert")  # the renamer is told too
    assert bare(bob.expect(ev.Message)) == ev.Message(LOBBY, "robert", "hi")


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
    alice.send_raw(raw_frame(FrameType.SAY, room_field(LOBBY) + text_field(b"a" * (MAX_TEXT + 1))))
    assert alice.expect(ev.Error).code is ErrorCode.TEXT_TOO_LONG
    alice.send_raw(raw_frame(FrameType.SAY, room_field(LOBBY) + text_field(b"bad \xff\xfe utf-8")))
    assert alice.expect(ev.Error).code is ErrorCode.BAD_UTF8
    alice.send(ev.Say(LOBBY, "b" * MAX_TEXT))
    assert bare(bob.expect(ev.Message)) == ev.Message(LOBBY, "alice", "b" * MAX_TEXT)
    assert bare(alice.expect(ev.Message)) == ev.Message(LOBBY, "alice", "b" * MAX_TEXT)


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
    alice.send(ev.Say(LOBBY, "too early"))
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
    assert nc.line() == "*** bob joined #lobby"
    assert nc.line().startswith("* error (bad-utf8):")
    assert nc.line().startswith("* error (text-too-long):")
    assert nc.line().startswith("* error (unknown-command):")
    assert nc.line().startswith("* error (bad-usage):")
    assert alice.expect(ev.Joined) == ev.Joined(LOBBY, "bob")
    assert bare(alice.expect(ev.Message)) == ev.Message(LOBBY, "bob", "still here")
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
    assert nc.line() == "*** bob joined #lobby"
    assert alice.expect(ev.Joined) == ev.Joined(LOBBY, "bob")
    assert bare(alice.expect(ev.Message)) == ev.Message(LOBBY, "bob", "привет 👋")
    assert bare(alice.expect(ev.Action)) == ev.Action(LOBBY, "bob", "waves")
    assert bare(alice.expect(ev.Message)) == ev.Message(LOBBY, "bob", "/slash")
    assert bare(alice.expect(ev.Private)) == ev.Private("bob", "psst")
    assert alice.expect(ev.Renamed) == ev.Renamed("bob", "bobby")
    assert nc.line() == "*** bob is now known as bobby"  # and none of bob's own lines back to him
    alice.send(ev.Say(LOBBY, "hi bob"), ev.Act(LOBBY, "smiles"), ev.Whisper("bobby", "secret"))
    assert nc.line() == "alice: hi bob"  # from bob's current room: no [#lobby] in front
    assert nc.line() == "* alice smiles"
    assert nc.line() == "*alice* secret"
    nc.send(b"/help\n")
    helped = [nc.line() for _ in HELP_LINES]
    assert helped == [f"* {line}" for line in HELP_LINES]
    assert any(line.startswith("* /nick NEW") for line in helped)
    assert any(line.startswith("* /join #room") for line in helped)
    nc.send(b"/quit gone fishing\n")
    assert nc.line() == "*** disconnected: bye"
    assert nc.line() == ""
    assert [bare(alice.expect(ev.Message)), bare(alice.expect(ev.Action))] == [
        ev.Message(LOBBY, "alice", "hi bob"),
        ev.Action(LOBBY, "alice", "smiles"),
    ]
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
    assert nc.line() == "*** bob joined #lobby"
    assert nc.line() == ""
    assert alice.expect(ev.Joined) == ev.Joined(LOBBY, "bob")
    assert bare(alice.expect(ev.Message)) == ev.Message(LOBBY, "bob", "last words")
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
    bob.send(ev.Say(LOBBY, "bye"))
    reset(bob.sock)
    assert alice.expect(ev.Message).text == "bye"
    left = alice.expect(ev.Left)
    assert left.nick == "bob"
    carol = clients(server.address)
    carol.register("bob")  # the nick is free again and the server still serves
    assert carol.briefing is not None
    assert [bare(m) for m in carol.briefing.history] == [ev.Message(LOBBY, "bob", "bye", history=True)]


def test_resets_before_accept_do_not_hurt(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    for _ in range(30):
        sock = socket.create_connection(server.address, timeout=WAIT)
        reset(sock)
    alice, bob = clients(server.address), clients(server.address)
    alice.register("alice")
    bob.register("bob")
    bob.send(ev.Say(LOBBY, "still up"))
    alice.expect(ev.Joined)
    assert alice.expect(ev.Message).text == "still up"


#: What a slow consumer is sent past its queue's limit before its stream ends.
FAREWELL: list[ev.Event] = [ev.Error(ErrorCode.SLOW_CONSUMER, SLOW_DETAIL), ev.Goodbye(SLOW_DETAIL)]


def test_stuck_reader_is_cut_off_and_nobody_else_waits(
    make_server: MakeServer, clients: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stuck client reads only once the others are done, which may take a
    # loaded machine longer than the 2 s a closing connection has to flush:
    # give it all the test's patience, so what it reads does not depend on that race.
    monkeypatch.setattr(tcpchat.server, "LINGER", WAIT)
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
    # Each talker hears both: the other's messages and its own echoed back.
    received: list[list[str]] = [[], []]
    left: list[list[ev.Left]] = [[], []]
    failures: list[BaseException] = []

    def listen(i: int) -> None:
        try:
            while len(received[i]) < 2 * per_talker or not left[i]:
                event = talkers[i].expect(ev.Event)
                if isinstance(event, ev.Message):
                    received[i].append(event.text)
                elif isinstance(event, ev.Left):
                    left[i].append(event)
                else:  # a talker cut off for being slow itself would say so here
                    raise AssertionError(f"talker {i} after {len(received[i])} messages: {event!r}")
        except BaseException as exc:
            failures.append(exc)

    listeners = [threading.Thread(target=listen, args=(i,)) for i in range(2)]
    for thread in listeners:
        thread.start()
    for i, talker in enumerate(talkers):
        talker.send(*(ev.Say(LOBBY, f"{i}:{n}:{text}") for n in range(per_talker)))
    for thread in listeners:
        thread.join(WAIT * 2)
    assert not failures
    assert not any(thread.is_alive() for thread in listeners)
    for i in range(2):
        for j in range(2):
            assert [t for t in received[i] if t.startswith(f"{j}:")] == [f"{j}:{n}:{text}" for n in range(per_talker)]
        assert [e.nick for e in left[i]] == ["stuck"]
    assert received[0] == received[1]  # in one order
    # Only its small farewell ever goes past the limit.
    assert server.peak_queued <= max_queue + sum(len(encode(e)) for e in FAREWELL)
    # The stuck client gets a part of the chat without a gap, then is told why
    # it is cut off, then its stream ends.
    events = stuck.until_closed()
    assert events[:2] == [ev.Joined(LOBBY, "ann"), ev.Joined(LOBBY, "ben")]
    assert events[-2:] == FAREWELL
    middle = events[2:-2]
    assert all(isinstance(e, ev.Message) for e in middle)
    texts = [e.text for e in middle if isinstance(e, ev.Message)]
    assert len(texts) < 2 * per_talker
    for i in range(2):
        mine = [t for t in texts if t.startswith(f"{i}:")]
        assert mine == [f"{i}:{n}:{text}" for n in range(len(mine))]


@pytest.mark.parametrize(
    "max_queue",
    [
        256 * 1024,
        # A queue smaller than one read's worth of relayed messages (some 64 KiB):
        # the kernel may take the head of a batch with the non-blocking send,
        # and the rest must then be queued, or the farewell would follow half a
        # frame and the client would read garbage.
        16 * 1024,
    ],
)
def test_a_slow_consumer_is_told_why_before_it_is_closed(
    make_server: MakeServer, clients: MakeClient, monkeypatch: pytest.MonkeyPatch, max_queue: int
) -> None:
    # The slow client reads only after the flood; see the stuck reader test for LINGER.
    monkeypatch.setattr(tcpchat.server, "LINGER", WAIT)
    server = make_server(max_queue=max_queue)  # and rate_limit=0: the flood is not held back
    slow = clients(server.address, rcvbuf=4096)
    slow.register("slow")
    flooder, witness = clients(server.address), clients(server.address)
    flooder.register("flooder")
    witness.register("witness")
    per_round, text = 500, "y" * 1000
    sent: list[str] = []
    left: list[ev.Left] = []
    flooder_told: list[ev.Event] = []

    def read_round(client: FramedClient, batch: list[str], others: list[Any]) -> None:
        got = 0
        while got < len(batch):
            event = client.expect(ev.Event)
            if isinstance(event, ev.Message):
                assert event.text == batch[got]
                got += 1
            else:
                others.append(event)

    # Flood in rounds the witness reads through, until the slow client's leave
    # notice shows it was cut off: the kernel buffers take some megabytes first.
    # The flooder reads its own echoes as the witness does, or it would be a
    # slow consumer itself.
    for round_ in range(40):
        batch = [f"{round_}/{n} {text}" for n in range(per_round)]
        sent += batch
        flooder.send(*(ev.Say(LOBBY, t) for t in batch))
        read_round(witness, batch, left)
        read_round(flooder, batch, flooder_told)
        if left:
            break
    assert left == [ev.Left("slow", SLOW_DETAIL)]
    assert flooder_told == [ev.Joined(LOBBY, "witness"), ev.Left("slow", SLOW_DETAIL)]
    # Now read what the slow client was sent: a gapless part of the flood,
    # then why it was cut off, then the end of the stream (no reset).
    events = slow.until_closed()
    assert events[:2] == [ev.Joined(LOBBY, "flooder"), ev.Joined(LOBBY, "witness")]
    assert events[-2:] == FAREWELL
    texts = [e.text for e in events[2:-2] if isinstance(e, ev.Message)]
    assert len(texts) == len(events) - 4  # nothing but messages between
    assert texts == sent[: len(texts)]
    assert len(texts) < len(sent)


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
    flooder.send(*(ev.Say(LOBBY, f"n{n}") for n in range(600)))  # burst 400, then 200/s
    assert [reader.expect(ev.Message).text for _ in range(600)] == [f"n{n}" for n in range(600)]
    flooder.send(ev.Who())
    assert flooder.expect(ev.Joined).nick == "reader"
    assert [flooder.expect(ev.Message).text for _ in range(600)] == [f"n{n}" for n in range(600)]  # its echoes
    assert flooder.expect(ev.WhoReply).nicks == ("flooder", "reader")


def test_private_messages_are_never_logged(
    make_server: MakeServer, clients: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: the server's and the session log's
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
    assert "(bob) left (reason: quit 'done')" in caplog.text
    assert "the-secret-word" not in caplog.text


def test_each_session_event_is_one_log_line_with_address_nick_and_reason(
    make_server: MakeServer, clients: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: departures named the address only, a quit was "closed by the
    # server", and nick changes were not logged at all (issue 13 item 11).
    caplog.set_level(logging.INFO, logger="twinchat.sessions")
    server = make_server()
    alice, bob = clients(server.address), clients(server.address)
    alice.register("alice")
    bob.register("bob")
    assert alice.expect(ev.Joined).nick == "bob"
    alice.send(ev.ChangeNick("alicia"))
    assert alice.expect(ev.Renamed) == ev.Renamed("alice", "alicia")
    bob.send(ev.Goodbye("see you"))
    bob.until_closed()
    alice.sock.shutdown(socket.SHUT_WR)
    alice.until_closed()
    server.shutdown()  # joins every thread: all is logged
    a = f"127.0.0.1:{alice.sock.getsockname()[1]}"
    b = f"127.0.0.1:{bob.sock.getsockname()[1]}"
    lines = [r.getMessage() for r in caplog.records if r.name == "twinchat.sessions"]
    # Each session's lines in order (the two sessions' lines may interleave).
    assert [line for line in lines if line.startswith(f"{a} ")] == [
        f"{a} connected",
        f"{a} registered as alice",
        f"{a} (alice) renamed alice -> alicia",
        f"{a} (alicia) left (reason: connection closed)",
    ]
    assert [line for line in lines if line.startswith(f"{b} ")] == [
        f"{b} connected",
        f"{b} registered as bob",
        f"{b} (bob) left (reason: quit 'see you')",
    ]


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
    address = server.address
    server.shutdown()
    # serve_forever returns at once (in a thread, so a hang fails the test
    # instead of blocking it): the server is shut already.
    serving = threading.Thread(target=server.serve_forever, name="late serve_forever")
    serving.start()
    serving.join(WAIT)
    assert not serving.is_alive()
    # And it let go of its port: nobody listens there any more.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=WAIT).close()
    server.shutdown()  # a second shutdown is harmless


def test_a_client_held_back_by_flood_control_is_not_idle(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server(rate_limit=50.0, idle_timeout=1.0)
    flooder, reader = clients(server.address), clients(server.address)
    flooder.register("flooder")
    reader.register("reader")
    flooder.send(*(ev.Say(LOBBY, f"n{n}") for n in range(200)))  # a burst of 128, then 1.4 s at 50/s
    assert [reader.expect(ev.Message).text for _ in range(200)] == [f"n{n}" for n in range(200)]
    flooder.send(ev.Who())
    assert flooder.expect(ev.Joined).nick == "reader"
    assert [flooder.expect(ev.Message).text for _ in range(200)] == [f"n{n}" for n in range(200)]  # its echoes
    assert flooder.expect(ev.WhoReply).nicks == ("flooder", "reader")


def test_ipv6_loopback(clients: MakeClient) -> None:
    # A machine without ::1 fails here, loudly: the server is meant to serve it.
    assert socket.has_ipv6, "this Python has no IPv6"
    try:
        server = ChatServer("::1", 0, rate_limit=0)
    except OSError as exc:
        pytest.fail(f"::1 unavailable ({exc}): the IPv6 loopback is part of what this test needs")
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        alice, bob = clients(server.address), clients(server.address)
        alice.register("alice")
        bob.register("bob")
        bob.send(ev.Say(LOBBY, "over v6"))
        assert alice.expect(ev.Joined) == ev.Joined(LOBBY, "bob")
        assert bare(alice.expect(ev.Message)) == ev.Message(LOBBY, "bob", "over v6")
        assert bare(bob.expect(ev.Message)) == ev.Message(LOBBY, "bob", "over v6")
    finally:
        server.shutdown()
        thread.join(WAIT)

"""The TCP client: its link in-process, and the program in pipe mode as a subprocess."""

from __future__ import annotations

import contextlib
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

import tcpchat.client
from common.chat import events as ev
from common.chat.commands import HELP_LINES
from common.chat.rooms import LOBBY
from common.fanout import SLOW_DETAIL
from common.wire.framing import encode
from tcpchat.client import tcp_connect
from tcpchat.server import ChatServer
from twinchat.frontend import ConnectError

from .conftest import WAIT, FramedClient, bare

MakeServer = Callable[..., ChatServer]
MakeClient = Callable[..., FramedClient]


def client_process(port: int, nick: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-bb", "-m", "tcpchat.client", "--port", str(port), "--nick", nick, *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(port: int, nick: str, *extra: str) -> subprocess.Popen[str]:
        proc = client_process(port, nick, *extra)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# --- the program in pipe mode --------------------------------------------------------


def test_pipe_mode_session(
    make_server: MakeServer, clients: MakeClient, processes: Callable[[int, str], subprocess.Popen[str]]
) -> None:
    server = make_server()
    obs = clients(server.address)
    obs.register("obs")
    proc = processes(server.address[1], "bot")
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stdout.readline() == "*** welcome, bot: 1 other online\n"
    assert proc.stdout.readline() == "*** bot joined #lobby\n"
    proc.stdin.write("hello\n/me waves\n/msg obs psst\nпривет 👋\n/bogus\n//slash\n\n")
    proc.stdin.flush()
    assert obs.expect(ev.Joined) == ev.Joined(LOBBY, "bot")
    assert bare(obs.expect(ev.Message)) == ev.Message(LOBBY, "bot", "hello")
    assert bare(obs.expect(ev.Action)) == ev.Action(LOBBY, "bot", "waves")
    assert bare(obs.expect(ev.Private)) == ev.Private("bot", "psst")
    assert bare(obs.expect(ev.Message)) == ev.Message(LOBBY, "bot", "привет 👋")
    assert bare(obs.expect(ev.Message)) == ev.Message(LOBBY, "bot", "/slash")
    # bot's own lines are shown once, as the server echoes them; the refused
    # /bogus is answered on the spot, so it may come anywhere among them.
    shown = [proc.stdout.readline() for _ in range(5)]
    refusals = [line for line in shown if line.startswith("* error (unknown-command): unknown command /bogus")]
    assert len(refusals) == 1
    assert [line for line in shown if line not in refusals] == [
        "bot: hello\n",
        "* bot waves\n",
        "bot: привет 👋\n",
        "bot: /slash\n",
    ]
    obs.send(ev.Say(LOBBY, "hi bot 😀"), ev.Act(LOBBY, "smiles"), ev.Whisper("bot", "just you"))
    assert proc.stdout.readline() == "obs: hi bot 😀\n"
    assert proc.stdout.readline() == "* obs smiles\n"
    assert proc.stdout.readline() == "*obs* just you\n"
    assert [bare(obs.expect(ev.Message)), bare(obs.expect(ev.Action))] == [  # obs's own, echoed
        ev.Message(LOBBY, "obs", "hi bot 😀"),
        ev.Action(LOBBY, "obs", "smiles"),
    ]
    proc.stdin.write("/who\nlast line\n")
    proc.stdin.close()  # EOF: send everything, say goodbye, exit 0
    assert proc.wait(WAIT) == 0
    assert proc.stdout.read() == "* online: obs, bot\nbot: last line\n*** disconnected: bye\n"
    assert bare(obs.expect(ev.Message)) == ev.Message(LOBBY, "bot", "last line")
    assert obs.expect(ev.Left) == ev.Left("bot", "")


def test_pipe_mode_quit_command(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    obs = clients(server.address)
    obs.register("obs")
    done = subprocess.run(
        [sys.executable, "-bb", "-m", "tcpchat.client", "--port", str(server.address[1]), "--nick", "bot"],
        input="one\n/quit see you\nnever sent\n",
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.endswith("*** disconnected: bye\n")
    assert obs.expect(ev.Joined) == ev.Joined(LOBBY, "bot")
    assert bare(obs.expect(ev.Message)) == ev.Message(LOBBY, "bot", "one")
    assert obs.expect(ev.Left) == ev.Left("bot", "see you")


def test_refused_nick_is_one_line_on_stderr(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    clients(server.address).register("Маша")
    port = str(server.address[1])
    done = subprocess.run(
        [sys.executable, "-bb", "-m", "tcpchat.client", "--port", port, "--nick", "маша", "--nick-retries", "0"],
        input="hello\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=WAIT,
        check=False,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "nick-taken" in done.stderr


def test_taken_nick_is_tried_again_with_an_underscore(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    clients(server.address).register("bot")
    done = subprocess.run(
        [sys.executable, "-bb", "-m", "tcpchat.client", "--port", str(server.address[1]), "--nick", "bot"],
        input="hello\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("*** welcome, bot_: 1 other online\n")
    assert done.stderr == "tcpchat-client: refused: the nick bot is taken (nick-taken); trying bot_\n"


def test_unreachable_server_is_one_line_on_stderr(closed_port: int) -> None:
    done = subprocess.run(
        [sys.executable, "-bb", "-m", "tcpchat.client", "--port", str(closed_port), "--nick", "bot"],
        input="hello\n",
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1
    assert "cannot reach" in done.stderr


def test_pipe_mode_exits_when_the_server_goes(
    make_server: MakeServer, processes: Callable[[int, str], subprocess.Popen[str]]
) -> None:
    server = make_server()
    # Without --no-reconnect it would wait for the server to come back (tests/test_reconnect.py).
    proc = processes(server.address[1], "bot", "--no-reconnect")
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("*** welcome, bot")
    server.shutdown()  # stdin stays open: the client must not wait for it
    assert proc.wait(WAIT) == 1
    assert proc.stderr is not None
    assert proc.stderr.read() == "tcpchat-client: the server is shutting down\n"


# --- the link, in-process ----------------------------------------------------------


class Recorder:
    """Collects what a link reports, for a test to wait on."""

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[ev.ServerEvent] = queue.SimpleQueue()
        self.closed: queue.SimpleQueue[str] = queue.SimpleQueue()

    def next(self) -> ev.ServerEvent:
        return self.events.get(timeout=WAIT)


def test_link_reports_welcome_first_then_events_then_close(make_server: MakeServer, clients: MakeClient) -> None:
    server = make_server()
    obs = clients(server.address)
    obs.register("obs")
    seen = Recorder()
    link = tcp_connect("127.0.0.1", server.address[1], "bot", seen.events.put, seen.closed.put)
    try:
        assert seen.next() == ev.Welcome("bot", 2)
        assert seen.next() == ev.Joined(LOBBY, "bot")  # its own join, right after the Welcome
        replay = seen.next()  # then the lobby's history: none yet
        assert isinstance(replay, ev.Replay)
        assert (replay.room, replay.first, replay.last, replay.gap) == (LOBBY, 1, 0, False)
        assert obs.expect(ev.Joined) == ev.Joined(LOBBY, "bot")
        obs.send(ev.Say(LOBBY, "hi"))
        said = seen.next()
        assert isinstance(said, ev.Message)
        assert bare(said) == ev.Message(LOBBY, "obs", "hi")
        assert said == obs.expect(ev.Message)  # numbered and timed as obs's own echo
        obs.send(ev.Goodbye("leaving"))
        assert seen.next() == ev.Left("obs", "leaving")
    finally:
        link.close("done")
    assert seen.next() == ev.Goodbye("bye")
    assert seen.closed.get(timeout=WAIT) == "bye"
    assert seen.closed.empty()
    link.close()  # a second close is harmless


def test_close_waits_until_the_server_has_everything(
    make_server: MakeServer, clients: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server takes 2 s to let the last 200 through and the close timeout is
    # a quarter of that: the client stops waiting first, yet it must end the
    # stream with a FIN after its data (never a reset), so nothing it sent is lost.
    monkeypatch.setattr(tcpchat.client, "CLOSE_TIMEOUT", 0.5)
    server = make_server(rate_limit=100.0)  # a burst of 200, then the server holds the client back
    obs = clients(server.address)
    obs.register("obs")
    seen = Recorder()
    link = tcp_connect("127.0.0.1", server.address[1], "bot", seen.events.put, seen.closed.put)
    for n in range(400):
        link.send(ev.Say(LOBBY, f"n{n}"))
    link.close("all sent")
    assert obs.expect(ev.Joined) == ev.Joined(LOBBY, "bot")
    assert [obs.expect(ev.Message).text for _ in range(400)] == [f"n{n}" for n in range(400)]
    assert obs.expect(ev.Left) == ev.Left("bot", "all sent")


def test_link_answers_pings(make_server: MakeServer) -> None:
    server = make_server(idle_timeout=0.6)
    seen = Recorder()
    link = tcp_connect("127.0.0.1", server.address[1], "bot", seen.events.put, seen.closed.put)
    try:
        assert isinstance(seen.next(), ev.Welcome)
        assert seen.next() == ev.Joined(LOBBY, "bot")
        assert isinstance(seen.next(), ev.Replay)
        pings = [seen.next() for _ in range(3)]  # three idle periods survived
        assert all(isinstance(p, ev.Ping) for p in pings)
        assert seen.closed.empty()
    finally:
        link.close()


@pytest.mark.parametrize(
    ("nick", "words"),
    [("has space", "bad-nick"), ("x" * 40, "invalid nick"), ("9lives", "bad-nick"), ("taken", "nick-taken")],
)
def test_connect_refusals(make_server: MakeServer, clients: MakeClient, nick: str, words: str) -> None:
    server = make_server()
    clients(server.address).register("taken")
    seen = Recorder()
    with pytest.raises(ConnectError, match=words):
        tcp_connect("127.0.0.1", server.address[1], nick, seen.events.put, seen.closed.put)
    assert seen.events.empty()


def test_connect_to_something_else() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer_like_http() -> None:
            peer, _ = listener.accept()
            with peer:
                peer.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        thread = threading.Thread(target=answer_like_http)
        thread.start()
        seen = Recorder()
        try:
            with pytest.raises(ConnectError, match="does not speak twinchat"):
                tcp_connect("127.0.0.1", listener.getsockname()[1], "bot", seen.events.put, seen.closed.put)
        finally:
            thread.join(WAIT)


def test_pipe_mode_ctrl_c_leaves_cleanly(
    make_server: MakeServer, clients: MakeClient, processes: Callable[[int, str], subprocess.Popen[str]]
) -> None:
    server = make_server()
    obs = clients(server.address)
    obs.register("obs")
    proc = processes(server.address[1], "bot")
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdin is not None
    assert proc.stdout.readline().startswith("*** welcome, bot")
    assert proc.stdout.readline() == "*** bot joined #lobby\n"
    proc.stdin.write("/help\n")  # answered by the main loop: once it shows, Ctrl-C lands there
    proc.stdin.flush()
    assert [proc.stdout.readline() for _ in HELP_LINES] == [f"* {line}\n" for line in HELP_LINES]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(WAIT) == 130
    assert obs.expect(ev.Joined) == ev.Joined(LOBBY, "bot")
    assert obs.expect(ev.Left) == ev.Left("bot", "")  # it said Goodbye: no "connection lost"
    assert proc.stdout.read() == "*** disconnected: bye\n"
    assert proc.stderr.read() == ""


def test_a_client_cut_off_for_being_slow_names_the_cause(
    make_server: MakeServer, clients: MakeClient, processes: Callable[[int, str], subprocess.Popen[str]]
) -> None:
    # Issue 15 item 5. Before: the cut client said "the server broke the
    # protocol (truncated: the stream ended inside a frame)". Its stdout is not
    # read until the server has cut it off and closed the connection, so it
    # stalls like a client that does not keep up.
    server = make_server(max_queue=16384)
    flooder = clients(server.address)
    flooder.register("flood")
    slow = processes(server.address[1], "slow")
    assert flooder.expect(ev.Joined).nick == "slow"
    stop = threading.Event()

    def flood() -> None:
        burst = b"".join(encode(ev.Say(LOBBY, f"{i:05d} " + "x" * 4000)) for i in range(50))
        with contextlib.suppress(OSError):
            while not stop.is_set():
                flooder.send_raw(burst)

    sender = threading.Thread(target=flood, name="flooder")
    sender.start()
    try:
        # The flooder reads its own flood as the server echoes it, or it would
        # be cut off for being slow itself.
        while not isinstance(event := flooder.expect(ev.Event), ev.Left):
            assert isinstance(event, ev.Message) and event.sender == "flood", event
        left = event
    finally:
        stop.set()
        sender.join(WAIT)
    assert left == ev.Left("slow", SLOW_DETAIL)
    gone = threading.Event()
    for _ in range(int(WAIT / 0.05)):  # the server closes it within its linger time
        if len(server._conns) == 1:
            break
        gone.wait(0.05)
    assert len(server._conns) == 1
    # Read its output now, stdin left open: the end of stdin would be a quit.
    assert slow.stdout is not None and slow.stderr is not None
    reader = threading.Thread(target=slow.stdout.read, name="slow stdout")
    reader.start()
    reader.join(WAIT)
    assert slow.wait(WAIT) == 1
    err = slow.stderr.read()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "too slow" in lines[0], err
    assert "broke the protocol" not in err

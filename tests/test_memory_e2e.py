"""A server that remembers (issue 9), as a program: history, topics and accounts
across a clean restart, and across a ``kill -9`` in the middle of a flood,
every message any client was sent is in the history afterwards. Real
processes, a real SQLite file in the test's directory, loopback sockets."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from common.accounts import ScryptCost, make_verifier
from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.ports import Account
from common.wire.framing import NEED_DATA, StreamDecoder, encode
from tcpchat.server import ChatServer
from tests.processes import ServerProcess

WAIT = 10.0


class Framed:
    """A framed TCP client reading with the project's own decoder."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=WAIT)
        self.decoder = StreamDecoder()
        self.seen: list[ev.Event] = []

    def send(self, *events: ev.Event) -> None:
        self.sock.sendall(b"".join(encode(e) for e in events))

    def next(self) -> ev.Event | None:
        """The next event, or None once the stream ends (bounded by the socket timeout)."""
        while True:
            item = self.decoder.next_event()
            if isinstance(item, ev.Event):
                self.seen.append(item)
                return item
            if item is not NEED_DATA:
                return None
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            self.decoder.feed(data)

    def until(self, kind: type[ev.Event], **fields: object) -> ev.Event:
        for _ in range(100_000):
            event = self.next()
            assert event is not None, f"the stream ended before {kind.__name__}"
            if isinstance(event, kind) and all(getattr(event, k) == v for k, v in fields.items()):
                return event
        raise AssertionError("bounded wait ran out")

    def close(self) -> None:
        self.sock.close()


def _texts(events: list[ev.Event]) -> list[tuple[int, str]]:
    return [(e.seq, e.text) for e in events if isinstance(e, ev.Message)]


def test_history_topics_and_accounts_outlive_a_restart(
    tmp_path: Path,
    server_processes: list[ServerProcess],
) -> None:
    data = tmp_path / "data"
    first = ServerProcess("twinchat.server", "--data-dir", str(data))
    server_processes.append(first)
    alice = Framed(first.address)
    alice.send(ev.Register("alice"))
    lobby = alice.until(ev.Replay)  # an empty lobby: nothing is ever said there
    alice.send(ev.Join("#dev"), ev.SetTopic("#dev", "ship it"), ev.Say("#dev", "one"), ev.Say("#dev", "two"))
    alice.until(ev.Message, text="two")
    alice.send(ev.RegisterAccount("s3cret"), ev.Ping(1))
    registered = alice.until(ev.Reply)
    assert "registered" in registered.text  # type: ignore[attr-defined]
    alice.close()
    code, err = first.stop(signal.SIGINT)
    assert code == 0, err
    assert "Traceback" not in err

    second = ServerProcess("twinchat.server", "--data-dir", str(data))
    server_processes.append(second)
    impostor = Framed(second.address)
    impostor.send(ev.Register("ALICE"))
    refusal = impostor.until(ev.Error)
    assert refusal.code.name == "NEEDS_PASSWORD"  # type: ignore[attr-defined]
    impostor.send(ev.Register("alice", "guess"))
    assert impostor.until(ev.Error).code.name == "BAD_PASSWORD"  # type: ignore[attr-defined]
    impostor.send(ev.Register("alice", "s3cret"))
    impostor.until(ev.Welcome)
    impostor.send(ev.Join("#dev"))
    topic = impostor.until(ev.Topic)
    assert topic.text == "ship it"  # type: ignore[attr-defined]
    replay = impostor.until(ev.Replay)
    assert (replay.first, replay.last, replay.gap) == (1, 2, False)  # type: ignore[attr-defined]
    said = [impostor.until(ev.Message), impostor.until(ev.Message)]
    assert [(m.text, m.history) for m in said] == [("one", True), ("two", True)]  # type: ignore[attr-defined]
    # The lobby kept its numbering across the restart, empty as it is: a client
    # resuming it is not told it lost anything.
    impostor.send(ev.Join(LOBBY, lobby.epoch, lobby.last))  # type: ignore[attr-defined]
    resumed = impostor.until(ev.Replay, room=LOBBY)
    assert (resumed.epoch, resumed.gap) == (lobby.epoch, False)  # type: ignore[attr-defined]
    impostor.close()
    second.stop()


def test_after_kill_9_every_message_a_client_was_sent_is_in_the_history(
    tmp_path: Path,
    server_processes: list[ServerProcess],
) -> None:
    data = tmp_path / "data"
    first = ServerProcess("twinchat.server", "--data-dir", str(data), "--rate-limit", "0")
    server_processes.append(first)
    talker, listener = Framed(first.address), Framed(first.address)
    talker.send(ev.Register("talker"))
    talker.until(ev.Replay)
    listener.send(ev.Register("listener"))
    listener.until(ev.Replay)
    # A flood the listener reads as it comes; the server dies in the middle of it.
    talker.send(*(ev.Say(LOBBY, f"m{i}") for i in range(3000)))
    got: list[ev.Message] = []
    while len(got) < 500:
        event = listener.next()
        assert event is not None
        if isinstance(event, ev.Message):
            got.append(event)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.communicate(timeout=WAIT)
    while (event := listener.next()) is not None:  # whatever was in flight to it
        if isinstance(event, ev.Message):
            got.append(event)
    talker.close()
    listener.close()
    assert [m.seq for m in got] == list(range(1, len(got) + 1))

    second = ServerProcess("twinchat.server", "--data-dir", str(data), "--replay", "0")
    server_processes.append(second)
    reader = Framed(second.address)
    reader.send(ev.Register("reader"))
    reader.until(ev.Replay)
    stored: list[tuple[int, str]] = []
    before = 0
    for _ in range(20):  # page back through all of it, 500 at a time
        reader.send(ev.History(LOBBY, before, 500))
        page = reader.until(ev.Replay)
        if page.first > page.last:  # type: ignore[attr-defined]
            break
        batch = [reader.until(ev.Message) for _ in range(page.last - page.first + 1)]  # type: ignore[attr-defined]
        stored = _texts(batch) + stored  # type: ignore[arg-type]
        before = page.first  # type: ignore[attr-defined]
    reader.close()
    second.stop()
    shown = _texts(got)  # type: ignore[arg-type]
    assert stored[: len(shown)] == shown, "a message a client was sent is missing from the history"


def _refused_start(*args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "twinchat.server", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    return proc.returncode, proc.stderr


def test_a_store_that_cannot_be_used_is_one_line_at_start(
    tmp_path: Path,
    server_processes: list[ServerProcess],
) -> None:
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "twinchat.sqlite3").write_bytes(b"this is not a database, it is a grocery list\n" * 100)
    code, err = _refused_start("--data-dir", str(garbage))
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "twinchat.sqlite3" in err

    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a directory")
    code, err = _refused_start("--data-dir", str(in_the_way))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err

    # One server per data directory: the second says so and leaves the first alone.
    shared = tmp_path / "shared"
    server_processes.append(ServerProcess("twinchat.server", "--data-dir", str(shared)))
    code, err = _refused_start("--data-dir", str(shared))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert server_processes[0].proc.poll() is None


def test_a_login_storm_lets_the_others_chat_on(tmp_path: Path) -> None:
    # In process: the storm's passwords are hashed on the connections' own
    # threads, outside the hub lock, while two others chat.

    server = ChatServer(port=0, rate_limit=0, max_per_host=0, data_dir=str(tmp_path / "data"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    storm: list[Framed] = []
    try:
        owner = Framed(server.address)
        owner.send(ev.Register("owner"))
        owner.until(ev.Replay)
        owner.send(ev.RegisterAccount("correct horse"))
        owner.until(ev.Reply)
        owner.close()
        talker, listener = Framed(server.address), Framed(server.address)
        storm += [talker, listener]  # closed with the storm
        for client, nick in ((talker, "talker"), (listener, "listener")):
            client.send(ev.Register(nick))
            client.until(ev.Replay)
        storm[:0] = [Framed(server.address) for _ in range(24)]
        for i, client in enumerate(storm[:24]):
            # One right password among wrong ones: the throttle stops the guessers, not the chat.
            client.send(ev.Register("owner", "correct horse" if i == 0 else f"guess {i}"))
        talker.send(*(ev.Say(LOBBY, f"m{i}") for i in range(200)))
        heard = [listener.until(ev.Message, text=f"m{i}") for i in range(200)]
        assert [m.text for m in heard] == [f"m{i}" for i in range(200)]  # type: ignore[attr-defined]
        assert isinstance(storm[0].until(ev.Welcome), ev.Welcome)
        answers = [client.until(ev.Error).code.name for client in storm[1:24]]  # type: ignore[attr-defined]
        assert set(answers) <= {"BAD_PASSWORD", "TOO_MANY_TRIES"}
        # 5 wrong tries a minute from one address, however many were hashed at once.
        assert answers.count("BAD_PASSWORD") <= 5
    finally:
        for client in storm:
            client.close()
        server.shutdown()
        thread.join(WAIT)


def test_a_login_waiting_for_its_password_check_is_not_timed_out(tmp_path: Path) -> None:
    # Each check takes longer than the registration timeout (a costly verifier),
    # and they queue: the deadline waits for each check, not for the queue.
    server = ChatServer(port=0, max_per_host=0, register_timeout=0.3, data_dir=str(tmp_path / "data"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    clients: list[Framed] = []
    try:
        owner = Framed(server.address)
        clients.append(owner)
        owner.send(ev.Register("owner"))
        owner.until(ev.Replay)
        costly = make_verifier("pw", cost=ScryptCost(n=2**16))  # about 0.15 s a check
        with server._lock:  # an account with a costly verifier, as an old one might have
            server._hub._store.save_account(Account("owner", "owner", costly, 0))
        owner.send(ev.Goodbye(""))
        owner.until(ev.Goodbye)
        for _ in range(3):
            client = Framed(server.address)
            clients.append(client)
            client.send(ev.Register("owner", "wrong"))
        answers = [client.until(ev.Error).code.name for client in clients[1:]]  # type: ignore[attr-defined]
        assert answers == ["BAD_PASSWORD"] * 3  # not REGISTRATION_TIMEOUT
    finally:
        for client in clients:
            client.close()
        server.shutdown()
        thread.join(WAIT)

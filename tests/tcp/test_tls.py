"""The TCP port over TLS (``--tls-cert``/``--tls-key``) and the client's ``--tls``/``--cafile``.

Certificates are made at test time by ``trustme`` (a throwaway CA): no key is
ever committed. The test side speaks TLS with Python's ``ssl`` on a blocking
socket, one thread per client, as a person's ``openssl s_client`` would.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
import trustme

import tcpchat.server
from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.fanout import SLOW_DETAIL
from common.wire.errors import ErrorCode
from common.wire.framing import encode
from tcpchat.client import tcp_connect
from tcpchat.server import ChatServer
from twinchat.frontend import ConnectError
from twinchat.frontend.password import Cleartext
from twinchat.server import BothServer

from .conftest import WAIT, FramedClient, LineClient, bare, flood_until_cut

MakeServer = Callable[..., ChatServer]


class Pki(NamedTuple):
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost, as files."""

    ca: trustme.CA
    cafile: str
    cert: str
    key: str

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    where = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cafile, cert, key = where / "ca.pem", where / "cert.pem", where / "key.pem"
    ca.cert_pem.write_to_path(str(cafile))
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    return Pki(ca, str(cafile), str(cert), str(key))


@pytest.fixture
def tls_server(make_server: MakeServer, pki: Pki) -> Callable[..., ChatServer]:
    def make(**options: object) -> ChatServer:
        return make_server(tls_cert=pki.cert, tls_key=pki.key, **options)

    return make


class TlsFramed(FramedClient):
    """A framed client whose socket speaks TLS (verified against ``context``)."""

    def __init__(
        self, address: tuple[str, int], context: ssl.SSLContext, hostname: str = "127.0.0.1", *, rcvbuf: int = 0
    ) -> None:
        super().__init__(address, rcvbuf=rcvbuf)
        self.sock = context.wrap_socket(self.sock, server_hostname=hostname)


class TlsLine(LineClient):
    """A text-dialect client over TLS: ``openssl s_client -quiet``, in Python."""

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext) -> None:
        raw = socket.create_connection(address, timeout=WAIT)
        self.sock = context.wrap_socket(raw, server_hostname=address[0])
        self.file = self.sock.makefile("rb")


@pytest.fixture
def opened() -> Iterator[list[FramedClient | LineClient]]:
    clients: list[FramedClient | LineClient] = []
    yield clients
    for client in clients:
        client.close()


def test_framed_and_text_clients_chat_over_tls(
    tls_server: MakeServer, pki: Pki, opened: list[FramedClient | LineClient]
) -> None:
    server = tls_server()
    assert server.tls
    alice = TlsFramed(server.address, pki.client_context())
    opened.append(alice)
    alice.register("alice")
    nc = TlsLine(server.address, pki.client_context())
    opened.append(nc)
    nc.send(b"bob\n")
    assert nc.line().startswith("*** welcome, bob")
    assert nc.line() == "*** bob joined #lobby"
    assert alice.expect(ev.Joined) == ev.Joined(LOBBY, "bob")
    alice.send(ev.Say(LOBBY, "hello over tls"))
    assert nc.line() == "alice: hello over tls"
    nc.send("привет\n".encode())
    assert bare(alice.expect(ev.Message)) == ev.Message(LOBBY, "alice", "hello over tls")  # her echo
    assert bare(alice.expect(ev.Message)) == ev.Message(LOBBY, "bob", "привет")
    nc.send(b"/quit\n")
    assert alice.expect(ev.Left).nick == "bob"


def test_many_messages_over_tls_arrive_in_order(
    tls_server: MakeServer, pki: Pki, opened: list[FramedClient | LineClient]
) -> None:
    """Fan-out to several TLS members at once: records from the pushing threads
    and the writers never interleave (a broken record would end the stream)."""
    server = tls_server()
    members = [TlsFramed(server.address, pki.client_context()) for _ in range(4)]
    opened.extend(members)
    for i, member in enumerate(members):
        member.register(f"m{i}")
    for i, member in enumerate(members):
        member.send(*(ev.Say(LOBBY, f"{i}-{n}-" + "x" * 500) for n in range(200)))
    for member in members:
        heard: dict[str, list[int]] = {}
        while sum(map(len, heard.values())) < 800:
            said = member.next()
            if not isinstance(said, ev.Message):
                assert isinstance(said, ev.Joined | ev.Ping), said
                continue
            who, n, _ = said.text.split("-", 2)
            heard.setdefault(who, []).append(int(n))
        assert all(ns == list(range(200)) for ns in heard.values())


def test_a_slow_consumer_over_tls_is_told_why(
    tls_server: MakeServer, pki: Pki, opened: list[FramedClient | LineClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut off as a slow consumer, it still reads a valid stream to its
    farewell: what was refused was never encrypted (a record skipped would
    break every one after it)."""
    monkeypatch.setattr(tcpchat.server, "LINGER", WAIT)
    server = tls_server(max_queue=16 * 1024)
    slow = TlsFramed(server.address, pki.client_context(), rcvbuf=4096)
    flooder = TlsFramed(server.address, pki.client_context())
    opened += [slow, flooder]
    slow.register("slow")
    flooder.register("flooder")
    if not flood_until_cut(flooder, lambda event: isinstance(event, ev.Left) and event.nick == "slow"):
        pytest.fail("the slow client was never cut off")
    events = slow.until_closed()
    assert events[-2:] == [ev.Error(ErrorCode.SLOW_CONSUMER, SLOW_DETAIL), ev.Goodbye(SLOW_DETAIL)]
    assert all(isinstance(e, ev.Message | ev.Joined) for e in events[:-2])


def test_client_without_the_ca_is_refused(tls_server: MakeServer, pki: Pki) -> None:
    server = tls_server()
    with pytest.raises(ssl.SSLCertVerificationError):
        TlsFramed(server.address, ssl.create_default_context())  # the system's CAs: not ours
    with pytest.raises(ssl.SSLCertVerificationError, match=r"match"):
        TlsFramed(server.address, pki.client_context(), hostname="chat.example.org")
    late = TlsFramed(server.address, pki.client_context())  # the server is still up
    try:
        late.register("late")
    finally:
        late.close()


def test_plaintext_on_the_tls_port_is_closed_cleanly(
    tls_server: MakeServer, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = tls_server()
    with socket.create_connection(server.address, timeout=WAIT) as plain:
        plain.sendall(b"alice\n")
        assert plain.recv(1 << 16) == b""  # closed, no welcome in clear
    with socket.create_connection(server.address, timeout=WAIT) as framed:
        framed.sendall(encode(ev.Register("alice")))
        assert framed.recv(1 << 16) == b""
    late = TlsFramed(server.address, pki.client_context())
    try:
        late.register("alice")  # the server is up, and the nick was never taken
    finally:
        late.close()
    assert not [r for r in caplog.records if r.exc_info]
    refused = [r.getMessage() for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(refused) == 2, refused  # one line each


def _client_hello() -> bytes:
    """The first flight of a TLS client, as bytes."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_stalled_handshakes_are_dropped_and_cost_the_others_nothing(
    tls_server: MakeServer, pki: Pki, opened: list[FramedClient | LineClient]
) -> None:
    server = tls_server(register_timeout=0.5)
    silent = socket.create_connection(server.address, timeout=WAIT)
    stalled = socket.create_connection(server.address, timeout=WAIT)
    try:
        stalled.sendall(_client_hello()[:20])  # half a ClientHello, then nothing (slowloris)
        alice = TlsFramed(server.address, pki.client_context())
        opened.append(alice)
        alice.register("alice")  # served while the two stall
        alice.send(ev.Say(LOBBY, "still here"))
        assert bare(alice.expect(ev.Message)) == ev.Message(LOBBY, "alice", "still here")
        assert silent.recv(1 << 16) == b""  # dropped at the registration timeout
        assert stalled.recv(1 << 16) == b""
    finally:
        silent.close()
        stalled.close()


def test_tcp_client_api_over_tls(tls_server: MakeServer, pki: Pki) -> None:
    server = tls_server()
    events: queue.SimpleQueue[ev.ServerEvent] = queue.SimpleQueue()
    closed: queue.SimpleQueue[str] = queue.SimpleQueue()
    link = tcp_connect("127.0.0.1", server.address[1], "bot", events.put, closed.put, tls=pki.client_context())
    try:
        assert isinstance(events.get(timeout=WAIT), ev.Welcome)
        link.send(ev.Say(LOBBY, "from the client"))
        while not isinstance(said := events.get(timeout=WAIT), ev.Message):
            pass
        assert bare(said) == ev.Message(LOBBY, "bot", "from the client")
    finally:
        link.close("done")
    assert closed.get(timeout=WAIT)
    with pytest.raises(ConnectError, match="not trusted"):
        tcp_connect("127.0.0.1", server.address[1], "bot2", events.put, closed.put, tls=ssl.create_default_context())
    plain = ChatServer("127.0.0.1", 0)  # not TLS: it never answers a ClientHello, then drops it
    thread = threading.Thread(target=plain.serve_forever)
    thread.start()
    try:
        plain.register_timeout = 0.5
        with pytest.raises(ConnectError, match="TLS"):
            tcp_connect("127.0.0.1", plain.address[1], "bot3", events.put, closed.put, tls=pki.client_context())
    finally:
        plain.shutdown()
        thread.join(WAIT)


class Running(NamedTuple):
    """A program under test: its stdin, its stdout's lines as a thread reads
    them ("" at the end), and its stderr once it has ended."""

    proc: subprocess.Popen[str]
    lines: queue.SimpleQueue[str]
    stderr: list[str]

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def until(self, wanted: str) -> list[str]:
        """The lines up to the first that contains ``wanted`` (which must come)."""
        seen = []
        while True:
            line = self.lines.get(timeout=WAIT)
            seen.append(line)
            if wanted in line or not line:
                assert wanted in line, seen
                return seen


@contextlib.contextmanager
def running(*command: str) -> Iterator[Running]:
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8"
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    stdout = proc.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)
        lines.put("")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    program = Running(proc, lines, [])
    try:
        yield program
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)
        with contextlib.suppress(OSError):
            proc.stdin.close()
        reader.join(WAIT)
        stdout.close()
        program.stderr.append(proc.stderr.read())
        proc.stderr.close()


def test_tcp_client_program_with_cafile(
    tls_server: MakeServer, pki: Pki, opened: list[FramedClient | LineClient]
) -> None:
    server = tls_server()
    obs = TlsFramed(server.address, pki.client_context())
    opened.append(obs)
    obs.register("obs")
    port = str(server.address[1])
    flags = ("--nick", "bot", "--cafile", pki.cafile, "--no-reconnect")
    with running(sys.executable, "-bb", "-m", "tcpchat.client", "--port", port, *flags) as client:
        client.until("bot joined #lobby")
        client.write("hello\n")
        assert obs.expect(ev.Joined) == ev.Joined(LOBBY, "bot")
        assert bare(obs.expect(ev.Message)) == ev.Message(LOBBY, "bot", "hello")
        obs.send(ev.Say(LOBBY, "hi bot"))
        client.until("obs: hi bot")
        assert client.proc.stdin is not None
        client.proc.stdin.close()
        assert client.proc.wait(WAIT) == 0
    assert "WARNING" not in client.stderr[0]


def test_insecure_skip_verify_warns(tls_server: MakeServer) -> None:
    server = tls_server()
    port = str(server.address[1])
    with running(
        sys.executable, "-m", "tcpchat.client", "--port", port, "--nick", "bot", "--insecure-skip-verify"
    ) as client:
        client.until("bot joined #lobby")  # it connected all the same
        client.write("/quit\n")
        assert client.proc.wait(WAIT) == 0
    assert "WARNING: --insecure-skip-verify" in client.stderr[0]


def test_openssl_s_client_works_like_nc(tls_server: MakeServer, pki: Pki) -> None:
    # A real part: .ci/run installs the openssl program when it is missing.
    assert shutil.which("openssl") is not None, "no openssl program: apt-get install -y openssl"
    server = tls_server()
    where = f"127.0.0.1:{server.address[1]}"
    with running(
        "openssl", "s_client", "-quiet", "-verify_return_error", "-CAfile", pki.cafile, "-connect", where
    ) as nc:
        nc.write("carol\n")
        nc.until("*** carol joined #lobby")
        nc.write("/quit\n")
        nc.until("")  # the server closed the stream


def test_a_peer_that_closes_with_close_notify_is_answered_with_ours(
    tls_server: MakeServer, pki: Pki, opened: list[FramedClient | LineClient]
) -> None:
    server = tls_server()
    obs = TlsFramed(server.address, pki.client_context())
    opened.append(obs)
    obs.register("obs")
    nc = TlsLine(server.address, pki.client_context())
    opened.append(nc)
    nc.send(b"bob\n")
    assert nc.line().startswith("*** welcome, bob")
    assert nc.line() == "*** bob joined #lobby"
    assert obs.expect(ev.Joined) == ev.Joined(LOBBY, "bob")
    # unwrap() sends our close_notify and waits for the server's (bounded by
    # the socket's timeout): a server that only waits for a FIN never answers.
    assert isinstance(nc.sock, ssl.SSLSocket)
    plain = nc.sock.unwrap()
    assert plain.recv(4096) == b""  # and then its FIN, nothing after the alert
    assert obs.expect(ev.Left).nick == "bob"


def test_openssl_s_client_sees_a_clean_close(tls_server: MakeServer, pki: Pki) -> None:
    # The server closes first (/quit): its close_notify comes before its FIN, so
    # OpenSSL reports no "unexpected eof while reading" (a truncation attack's sign).
    assert shutil.which("openssl") is not None, "no openssl program: apt-get install -y openssl"
    server = tls_server()
    where = f"127.0.0.1:{server.address[1]}"
    with running("openssl", "s_client", "-quiet", "-CAfile", pki.cafile, "-connect", where) as nc:
        nc.write("dora\n")
        nc.until("*** dora joined #lobby")
        nc.write("/quit\n")
        nc.until("")
        assert nc.proc.wait(WAIT) == 0
    assert "unexpected eof" not in nc.stderr[0].lower(), nc.stderr[0]


def test_bad_certificate_is_one_line_and_exit_1(tmp_path: Path, pki: Pki) -> None:
    missing = str(tmp_path / "missing.pem")
    for cert, key in ((missing, pki.key), (pki.cafile, pki.key)):  # no file; a cert without its key
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tcpchat.server",
                "--port",
                "0",
                "--ephemeral",
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("tcpchat-server: --tls-cert")


def test_a_password_over_tls_is_not_cleartext() -> None:
    assert not Cleartext("chat.example.org").permits(None)
    encrypted = Cleartext("chat.example.org", encrypted=True)
    assert encrypted.permits(None)
    assert not encrypted.remote


def test_the_all_in_one_server_speaks_tls_on_its_tcp_port_only(pki: Pki) -> None:
    both = BothServer("127.0.0.1", 0, tls_cert=pki.cert, tls_key=pki.key, rate_limit=0)
    thread = threading.Thread(target=both.serve_forever)
    thread.start()
    try:
        assert both.tcp.tls
        member = TlsFramed(both.address, pki.client_context())
        try:
            member.register("alice")
        finally:
            member.close()
    finally:
        both.shutdown()
        thread.join(WAIT)

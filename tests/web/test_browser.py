"""The page in a real browser: headless Chromium driven by Selenium, against a
real server, beside a person at nc.

Chromium and chromedriver are Debian's (``/usr/bin``; ``.ci/run`` installs
them): a missing one fails these tests, never skips them. Every wait is a
WebDriverWait on a condition of the page, bounded by ``WAIT``.

With ``TWINCHAT_SCREENSHOTS=DIR`` the tests save what the page looked like at
their key moments in DIR (``docs/screenshots`` holds the ones of one run).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from common.chat import events as ev
from common.chat.commands import split_text
from common.chat.rooms import LOBBY
from common.wire.errors import ErrorCode
from common.wire.framing import encode
from tcpchat.server import ChatServer
from tests.tcp.conftest import LineClient
from tests.tcp.test_tls import TlsLine, pki
from tests.web.conftest import WAIT

__all__ = ["pki"]  # a fixture: a throwaway CA and the server's certificate

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: A host name the browsers resolve to 127.0.0.1: a page from "another machine" in clear HTTP.
REMOTE_NAME = "chat.test"

HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"

#: What the page shows, per room: each line's class, nick and text (hidden rooms included).
_LINES_JS = """
const room = arguments[0];
return [...document.querySelectorAll('ol.log')]
  .filter((log) => room === null || log.dataset.room === room)
  .flatMap((log) => [...log.children].map((li) => ({
    kind: li.className,
    nick: (li.querySelector('.nick') || {}).textContent || '',
    text: (li.querySelector('.text') || {}).textContent || '',
  })));
"""


def _browser(*extra: str) -> webdriver.Chrome:
    for path in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(path) is None:
            pytest.fail(f"{path} is missing: install Debian's chromium and chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,640"):
        options.add_argument(arg)
    # A name that is not loopback to the page, still served from 127.0.0.1 (no network needed).
    options.add_argument(f"--host-resolver-rules=MAP {REMOTE_NAME} 127.0.0.1")
    for arg in extra:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def browsers() -> Iterator[list[webdriver.Chrome]]:
    """Two browsers (two people), shared by the module's tests: starting one costs seconds."""
    started: list[webdriver.Chrome] = []
    try:
        started += [_browser(), _browser()]
        yield started
    finally:
        for driver in started:
            driver.quit()


class Page:
    """One person's page, driven as they would: forms filled, buttons pressed."""

    def __init__(self, driver: webdriver.Chrome, address: tuple[str, int]) -> None:
        self.driver = driver
        self.base = f"http://{address[0]}:{address[1]}/"

    def wait(self, condition: Callable[[webdriver.Chrome], Any], what: str) -> Any:
        return WebDriverWait(self.driver, WAIT).until(condition, f"the page never showed {what}")

    def login(self, nick: str) -> None:
        self.driver.get(self.base)
        self.driver.find_element(By.ID, "nick").send_keys(nick)
        self.driver.find_element(By.ID, "login-button").click()
        self.wait(lambda d: d.find_element(By.ID, "me").text == nick, f"{nick} logged in")
        self.wait_line(LOBBY, lambda line: line["text"] == f"you joined {LOBBY}", "the lobby joined")

    def type(self, text: str) -> None:
        """Type ``text`` and press Send. (Set by script: chromedriver cannot type
        characters beyond the BMP, such as emoji.)"""
        self.driver.execute_script("document.getElementById('input').value = arguments[0];", text)
        self.driver.find_element(By.CSS_SELECTOR, "#say button").click()

    def lines(self, room: str | None = None) -> list[dict[str, str]]:
        return self.driver.execute_script(_LINES_JS, room)  # type: ignore[no-any-return]

    def wait_line(self, room: str | None, test: Callable[[dict[str, str]], bool], what: str) -> None:
        self.wait(lambda d: any(test(line) for line in self.lines(room)), what)

    def wait_said(self, room: str, nick: str, text: str) -> None:
        self.wait_line(room, lambda line: line["nick"] == nick and line["text"] == text, f"{nick}: {text} in {room}")

    def click_room(self, room: str) -> None:
        self.driver.execute_script(
            "[...document.querySelectorAll('#room-list li')].find((x) => x.dataset.room === arguments[0]).click();",
            room,
        )

    def current(self) -> str:
        return self.driver.find_element(By.ID, "room-name").text

    def unread(self, room: str) -> str:
        return self.driver.execute_script(  # type: ignore[no-any-return]
            "const li = [...document.querySelectorAll('#room-list li')].find((x) => x.dataset.room === arguments[0]);"
            "const badge = li && li.querySelector('.unread'); return badge ? badge.textContent : '';",
            room,
        )

    def screenshot(self, name: str) -> None:
        where = os.environ.get("TWINCHAT_SCREENSHOTS")
        if where:
            Path(where).mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(Path(where) / f"{name}.png"))


class Server:
    """An in-process chat server on 127.0.0.1, restartable on the same port."""

    def __init__(self, data_dir: Path, port: int = 0, **options: Any) -> None:
        self.data_dir = data_dir
        self.server = ChatServer("127.0.0.1", port, rate_limit=0, data_dir=str(data_dir), **options)
        self.thread = threading.Thread(target=self.server.serve_forever, name="browser test server")
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def nc(address: tuple[str, int], nick: str) -> LineClient:
    person = LineClient(address)
    person.send(nick.encode() + b"\n")
    assert person.line().startswith(f"*** welcome, {nick}")
    return person


def fresh(browsers: list[webdriver.Chrome], address: tuple[str, int]) -> list[Page]:
    """Both browsers on a new page (a new server): nothing of the last test left."""
    pages = [Page(driver, address) for driver in browsers]
    for page in pages:
        page.driver.get("about:blank")
    return pages


def test_two_pages_and_nc_chat_in_two_rooms(browsers, servers: list[Server], tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    servers.append(server)
    ann, bora = fresh(browsers, server.address)
    ann.driver.get(ann.base)
    ann.screenshot("login")
    ann.login("ann")
    bora.login("Бора")
    carol = nc(server.address, "carol")
    try:
        # In the lobby, all three.
        ann.wait_line(LOBBY, lambda line: line["text"] == f"carol joined {LOBBY}", "carol's join")
        ann.type("héllo 🌍, ça va ?")
        bora.wait_said(LOBBY, "ann", "héllo 🌍, ça va ?")
        assert _nc_until(carol, "ann: héllo 🌍, ça va ?")
        carol.send("Привет from nc ✓\n".encode())
        ann.wait_said(LOBBY, "carol", "Привет from nc ✓")
        bora.wait_said(LOBBY, "carol", "Привет from nc ✓")

        # A second room, joined from the input line and from the side form.
        ann.type("/join #dev")
        ann.wait(lambda d: ann.current() == "#dev", "#dev current")
        bora.driver.execute_script("document.getElementById('join-room').value = '#dev';")
        bora.driver.find_element(By.CSS_SELECTOR, "#join-form button").click()
        bora.wait(lambda d: bora.current() == "#dev", "#dev current")
        carol.send(b"/join #dev\n")
        bora.type("/me waves 👋 from #dev")
        ann.wait_line(
            "#dev", lambda line: line["nick"] == "* Бора" and line["text"] == " waves 👋 from #dev", "the action"
        )
        assert _nc_until(carol, "* Бора waves 👋 from #dev")

        # Unread counts: ann looks at the lobby while #dev talks.
        ann.driver.execute_script(
            "[...document.querySelectorAll('#room-list li')].find((x) => x.dataset.room === arguments[0]).click();",
            LOBBY,
        )
        ann.wait(lambda d: ann.current() == LOBBY, "the lobby current again")
        carol.send(b"one\ntwo\n")
        ann.wait_said("#dev", "carol", "two")
        ann.wait(lambda d: ann.unread("#dev") == "2", "2 unread in #dev")
        # Who is in the room, in the side panel, and /msg, /nick, /topic from the input line.
        bora.wait(lambda d: "carol" in d.find_element(By.ID, "people").text, "carol among #dev's people")
        bora.type("/topic ship it ✨")
        ann.wait(lambda d: ann.unread("#dev") == "2", "the count unchanged by a topic")
        bora.type("/msg carol psst 🤫")
        assert _nc_until(carol, "*Бора* psst 🤫")
        bora.screenshot("chat")
        ann.screenshot("unread")
    finally:
        carol.close()


def test_hostile_text_shows_as_text(browsers, servers: list[Server], tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    servers.append(server)
    ann, _ = fresh(browsers, server.address)
    ann.login("ann")
    mallory = nc(server.address, "mallory")
    try:
        # A nick cannot hold markup: the server refuses it (BAD_NICK), so only the text can.
        mallory.send(f"{HOSTILE}\n".encode())  # a chat line: mallory is registered
        mallory.send(f"/topic {HOSTILE}\n/me {HOSTILE}\n/msg ann {HOSTILE}\n".encode())
        ann.wait_said(LOBBY, "mallory", HOSTILE)
        ann.wait_line(LOBBY, lambda line: line["nick"] == "* mallory" and line["text"] == " " + HOSTILE, "the action")
        ann.wait_line(None, lambda line: line["nick"] == "*mallory*" and line["text"] == " " + HOSTILE, "the private")
        ann.wait(lambda d: d.find_element(By.ID, "topic").text == HOSTILE, "the topic as text")
        assert ann.driver.find_elements(By.TAG_NAME, "img") == []
        assert ann.driver.title == "twinchat"
        ann.screenshot("hostile")
    finally:
        mallory.close()
    # A hostile nick never gets to any page: refused at the door.
    door = LineClient(server.address)
    try:
        door.send(f"{HOSTILE}\n".encode())
        assert door.line().startswith("* error (bad-nick)")
    finally:
        door.close()


def test_the_page_survives_a_restart_and_shows_what_it_missed(browsers, servers: list[Server], tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = Server(data)
    port = first.address[1]
    ann, _ = fresh(browsers, first.address)
    ann.login("ann")
    ann.type("/join #dev")
    ann.wait(lambda d: ann.current() == "#dev", "#dev current")
    ann.type("before the restart")
    ann.wait_said("#dev", "ann", "before the restart")

    first.stop()  # the page is told SHUTTING_DOWN and keeps trying to come back
    ann.wait(lambda d: "reconnecting" in d.find_element(By.ID, "status").text, "that it is reconnecting")
    ann.screenshot("reconnecting")
    # Meanwhile, on the same store, others talk in #dev (a server on another port:
    # the page cannot reach it, so it misses this for sure).
    with socket.socket() as placeholder:  # bound, not listening: the page is refused, and no server gets the port
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        placeholder.bind(("127.0.0.1", port))
        meanwhile = Server(data)
        carol = nc(meanwhile.address, "carol")
        carol.send("/join #dev\nwhile you were away 1\nwhile you were away 2 — ünïcode\n/quit\n".encode())
        assert _nc_until(carol, "*** disconnected: bye")
        carol.close()
        meanwhile.stop()

    back = Server(data, port)
    servers.append(back)
    ann.wait_said("#dev", "carol", "while you were away 2 — ünïcode")
    lines = ann.lines("#dev")
    texts = [line["text"] for line in lines]
    assert texts.count("before the restart") == 1  # nothing shown twice
    assert "while you were away 1" in texts
    assert "2 messages while you were away" in texts
    ann.wait(lambda d: "connected as ann" in d.find_element(By.ID, "status").text, "connected again")
    # And the page chats on with the new server.
    ann.type("back again")
    ann.wait_said("#dev", "ann", "back again")
    ann.screenshot("after-restart")


def _nc_until(person: LineClient, wanted: str) -> bool:
    for _ in range(200):
        line = person.line()
        if line == wanted:
            return True
        assert line, f"nc was closed before {wanted!r}"
    return False


#: One event of every type the page sends or reads, Unicode and edge values included.
_CLIENT_SAMPLES = [
    ev.Register("Бора", "pässwörd", True),
    ev.Register("ann"),
    ev.Say("#dév", "héllo 🌍"),
    ev.Act(LOBBY, "waves"),
    ev.Whisper("carol", "psst"),
    ev.ChangeNick("anna"),
    ev.Who(),
    ev.Help(),
    ev.Join("#dev", "E1x", 2**53 - 1),
    ev.Part("#dev", ""),
    ev.ListRooms(),
    ev.Names("#dev"),
    ev.GetTopic("#dev"),
    ev.SetTopic("#dev", "ship it ✨"),
    ev.History("#dev", 41, 500),
    ev.RegisterAccount("secret"),
    ev.ChangePassword("old", "new"),
    ev.DropAccount("secret"),
    ev.Ping(7),
    ev.Pong(2**40),
    ev.Goodbye("bye"),
]
_SERVER_SAMPLES = [
    ev.Welcome("Бора", 3),
    ev.Message(LOBBY, "bob", "hi", 7, 1798761600000, False),
    ev.Action("#dev", "ann", "waves 👋", 2**53 - 1, 1, True),
    ev.Private("carol", "psst 🤫", 1798761600000, True),
    ev.Joined("#dev", "ann"),
    ev.Left("ann", "connection closed"),
    ev.Renamed("ann", "anna"),
    ev.WhoReply("", ("ann", "Бора"), True),
    ev.WhoReply("#dev", (), False),
    ev.Reply("you are in #dev already"),
    ev.Error(ErrorCode.NEEDS_PASSWORD, "ann is registered"),
    ev.Parted("#dev", "ann", "later"),
    ev.Topic("#dev", "ship it", "bob", 1798761600, True),
    ev.RoomList((ev.RoomInfo("#dev", 2, "ship it"), ev.RoomInfo(LOBBY, 0, "")), False),
    ev.Replay("#dev", "E1x", 42, 41, True),
    ev.Ping(1),
    ev.Pong(2),
    ev.Goodbye(""),
]


def _fields(event: ev.Event) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return int(value) if isinstance(value, ErrorCode) else value

    return {"type": type(event).__name__} | {f.name: plain(getattr(event, f.name)) for f in dataclasses.fields(event)}


def test_the_page_speaks_protocol_md_frames(browsers, servers: list[Server], tmp_path: Path) -> None:
    """The page's codec (proto.js) against the server's (common.wire.framing):
    the same bytes for what the page sends, the same fields for what it reads,
    and PROTOCOL.md's worked example."""
    server = Server(tmp_path / "data")
    servers.append(server)
    page = Page(browsers[0], server.address)
    page.driver.get(page.base)
    encoded = page.driver.execute_script(
        "return arguments[0].map(([name, values]) => Array.from(TwinProto.encode(name, values)));",
        [[type(e).__name__, _fields(e)] for e in _CLIENT_SAMPLES],
    )
    assert [bytes(b) for b in encoded] == [encode(e) for e in _CLIENT_SAMPLES]
    decoded = page.driver.execute_script(
        "return arguments[0].map((b) => TwinProto.decode(new Uint8Array(b)));",
        [list(encode(e)) for e in _SERVER_SAMPLES],
    )
    assert decoded == [_fields(e) for e in _SERVER_SAMPLES]
    example = bytes.fromhex(
        "c1540421000000200623 6c6f626279 03626f62 00026869 0000000000000007 000001a2ce8bd400 00".replace(" ", "")
    )
    assert example == encode(_SERVER_SAMPLES[1])
    refused = page.driver.execute_script(
        "return arguments[0].map((b) => { try { TwinProto.decode(new Uint8Array(b)); return ''; }"
        " catch (e) { return e.constructor.name; } });",
        [list(example[:-1]), list(example + b"\0"), [0xC1, 0x54, 2, 0x21, 0, 0, 0, 0], list(b"GET / HT")],
    )
    assert refused == ["ProtocolError"] * 4


def test_history_pages_back_above_what_is_shown(browsers, servers: list[Server], tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    servers.append(server)
    carol = nc(server.address, "carol")
    try:
        carol.send(b"/join #old\n" + b"".join(f"line {n}\n".encode() for n in range(1, 31)) + b"/who\n")
        assert _nc_until(carol, "* online: carol")
        ann, _ = fresh(browsers, server.address)
        ann.login("ann")
        ann.type("/join #old")
        ann.wait_said("#old", "carol", "line 30")
        shown = [line["text"] for line in ann.lines("#old") if line["nick"] == "carol"]
        assert shown == [f"line {n}" for n in range(11, 31)]  # the join's replay: the latest 20
        ann.type("/history 5")
        ann.wait_said("#old", "carol", "line 6")
        shown = [line["text"] for line in ann.lines("#old") if line["nick"] == "carol"]
        assert shown == [f"line {n}" for n in range(6, 31)]  # the older five above, in order
        carol.send(b"after the page\n")
        ann.wait_said("#old", "carol", "after the page")
        assert ann.lines("#old")[-1]["text"] == "after the page"  # live lines still go below
    finally:
        carol.close()


def test_a_registered_nick_asks_for_its_password(browsers, servers: list[Server], tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    servers.append(server)
    owner = nc(server.address, "dora")
    owner.send(b"/register correct-horse\n/quit\n")
    assert _nc_until(owner, "*** disconnected: bye")
    owner.close()
    page, _ = fresh(browsers, server.address)
    driver = page.driver
    driver.get(page.base)
    assert not driver.find_element(By.ID, "password").is_displayed()
    driver.find_element(By.ID, "nick").send_keys("dora")
    driver.find_element(By.ID, "login-button").click()
    page.wait(lambda d: d.find_element(By.ID, "password").is_displayed(), "the password field (NEEDS_PASSWORD)")
    driver.find_element(By.ID, "password").send_keys("wrong-one")
    driver.find_element(By.ID, "login-button").click()
    page.wait(lambda d: "password" in d.find_element(By.ID, "login-error").text.lower(), "the wrong password said")
    driver.find_element(By.ID, "password").clear()
    driver.find_element(By.ID, "password").send_keys("correct-horse")
    driver.find_element(By.ID, "login-button").click()
    page.wait(lambda d: d.find_element(By.ID, "me").text == "dora", "dora logged in")


def test_a_page_in_the_clear_from_another_machine_sends_a_password_only_once_told_yes(
    browsers, servers: list[Server], tmp_path: Path
) -> None:
    server = Server(tmp_path / "data")
    servers.append(server)
    owner = nc(server.address, "dora")
    owner.send(b"/register correct-horse\n/quit\n")
    assert _nc_until(owner, "*** disconnected: bye")
    owner.close()
    page, _ = fresh(browsers, server.address)
    driver = page.driver
    page.base = f"http://{REMOTE_NAME}:{server.address[1]}/"
    driver.get(page.base)
    assert driver.find_element(By.ID, "cleartext").is_displayed()  # the warning is up
    driver.find_element(By.ID, "nick").send_keys("dora")
    driver.find_element(By.ID, "login-button").click()
    page.wait(lambda d: d.find_element(By.ID, "password").is_displayed(), "the password field (NEEDS_PASSWORD)")
    driver.find_element(By.ID, "password").send_keys("correct-horse")
    driver.find_element(By.ID, "login-button").click()
    page.wait(expected_conditions.alert_is_present(), "the question before a password goes in the clear")
    driver.switch_to.alert.dismiss()
    page.wait(lambda d: "not sent" in d.find_element(By.ID, "login-error").text, "the password held back")
    assert driver.find_element(By.ID, "me").text != "dora"
    driver.find_element(By.ID, "login-button").click()
    page.wait(expected_conditions.alert_is_present(), "the question asked again")
    driver.switch_to.alert.accept()
    page.wait(lambda d: d.find_element(By.ID, "me").text == "dora", "dora logged in once told yes")


def _spki_pin(cert_file: str) -> str:
    """Chromium's pin of a certificate: base64 of the SHA-256 of its public key (SPKI)."""
    certificate = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_over_tls_the_page_chats_on_wss_with_a_person_at_openssl(servers: list[Server], tmp_path: Path, pki) -> None:
    # The browser trusts exactly this server's key (a pin, not "ignore every error").
    server = Server(tmp_path / "data", tls_cert=pki.cert, tls_key=pki.key)
    servers.append(server)
    driver = _browser(f"--ignore-certificate-errors-spki-list={_spki_pin(pki.cert)}")
    person: TlsLine | None = None
    try:
        page = Page(driver, server.address)
        page.base = f"https://127.0.0.1:{server.address[1]}/"
        page.login("tess")
        assert driver.execute_script("return document.location.protocol") == "https:"
        # Connected only now, and its nick sent at once: a person silent for a
        # second is greeted first (PROTOCOL.md, the text dialect).
        person = TlsLine(server.address, pki.client_context())
        person.send("тони\n".encode())
        assert person.line().startswith("*** welcome, тони")
        page.wait_line(LOBBY, lambda line: line["text"] == f"тони joined {LOBBY}", "the TLS person's join")
        page.type("over wss ✓")
        assert _nc_until(person, "tess: over wss ✓")
        person.send("and back over TLS ✓\n".encode())
        page.wait_said(LOBBY, "тони", "and back over TLS ✓")
    finally:
        if person is not None:
            person.close()
        driver.quit()


_LONG_TEXTS = [
    "mot " * 2500,  # words: cut after a space
    "é" * 5000,  # two bytes each, no space
    "e\u0301" * 3000,  # a letter and its combining accent: never cut between them
    "👍🏽" * 1200,  # four bytes each, a modifier after each
    "a" * 4096,  # exactly the cap: one piece
    "x" * 3000 + " " + "y" * 3000,  # a space in the first half only
]


def test_long_texts_are_cut_as_the_reference_clients_cut_them(browsers, servers: list[Server], tmp_path: Path) -> None:
    server = Server(tmp_path / "data")
    servers.append(server)
    page, _ = fresh(browsers, server.address)
    page.driver.get(page.base)
    pieces = page.driver.execute_script("return arguments[0].map((t) => TwinProto.splitText(t));", _LONG_TEXTS)
    assert pieces == [split_text(text) for text in _LONG_TEXTS]
    # And the page sends a long line as those pieces, each a message of its own.
    carol = nc(server.address, "carol")
    try:
        page.login("ann")
        page.type(_LONG_TEXTS[0])
        got = [_nc_said(carol, "ann") for _ in split_text(_LONG_TEXTS[0])]
        assert got == split_text(_LONG_TEXTS[0])
    finally:
        carol.close()


def _nc_said(person: LineClient, nick: str) -> str:
    """The text of the next line ``nick`` said (other lines skipped)."""
    for _ in range(200):
        line = person.line()
        assert line, "nc was closed"
        if line.startswith(f"{nick}: "):
            return line[len(nick) + 2 :]
    raise AssertionError(f"{nick} said nothing")

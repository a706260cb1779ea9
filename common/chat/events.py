"""What twinchat peers say to each other, as frozen dataclasses.

Every frame on the wire decodes to exactly one of these classes and every one of
them encodes to exactly one frame (``common.wire.framing`` holds the byte layouts).
They are grouped by who may send them:

- ``ClientEvent``: a client asks the server for something (register, say, ...);
- ``ServerEvent``: the server tells a client what happened (message, notice, ...);
- both at once: ``Ping``, ``Pong`` and ``Goodbye`` go either way;
- ``SessionEvent``: the UDP session and reliability layer (handshake, sequenced
  data, acknowledgements); TCP never carries these.

Constructors check what is cheap and universal (a nick field has 1 to 32
characters, a chat text is non-empty UTF-8 of at most 4096 bytes with no control
characters) and raise ``RuleError`` otherwise, so an invalid event cannot exist.
The full nick grammar and uniqueness are chat-state rules, checked by
``common.chat.hub``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from common.chat.unicode_rules import bidi_unbalanced, defuse_bidi, has_bidi_control, nfc_length
from common.wire.errors import ErrorCode, RuleError
from common.wire.limits import MAX_ACK_RANGES, MAX_NICK, MAX_TEXT, WHO_CHUNK

# C0 controls but TAB, DEL, C1 controls, and lone surrogates (which cannot be
# encoded as UTF-8). A line break inside a text would let one peer forge extra
# lines in the text dialect; an ESC would let it drive other users' terminals.
_FORBIDDEN: Final = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")

# Every code point takes at most 4 bytes of UTF-8, so a text this short in code
# points is short enough in bytes without encoding it.
_SURELY_SHORT: Final = MAX_TEXT // 4

_U64: Final = 1 << 64


def check_text(text: str, *, what: str = "text", allow_empty: bool = False) -> None:
    """Refuse a text that no twinchat frame may carry.

    Raises:
        RuleError: BAD_TEXT if it is empty (unless allowed) or holds control
            characters, TEXT_TOO_LONG if its UTF-8 is over MAX_TEXT bytes.
    """
    if not text and not allow_empty:
        raise RuleError(ErrorCode.BAD_TEXT, f"the {what} is empty")
    if len(text) > _SURELY_SHORT and len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT:
        raise RuleError(ErrorCode.TEXT_TOO_LONG, f"the {what} is over {MAX_TEXT} bytes of UTF-8")
    if _FORBIDDEN.search(text):
        raise RuleError(ErrorCode.BAD_TEXT, f"the {what} holds control characters")
    if bidi_unbalanced(text):
        raise RuleError(ErrorCode.BAD_TEXT, f"the {what} leaves a bidi override or isolate unclosed")


def check_nick_shape(nick: str) -> None:
    """Refuse a nick field of the wrong length; the full grammar is ``common.chat.nicks``.

    Raises:
        RuleError: BAD_NICK.
    """
    if not 1 <= nfc_length(nick, MAX_NICK) <= MAX_NICK:
        raise RuleError(ErrorCode.BAD_NICK, f"a nick has 1 to {MAX_NICK} characters")
    if _FORBIDDEN.search(nick) or has_bidi_control(nick):
        raise RuleError(ErrorCode.BAD_NICK, "a nick cannot hold control characters")


def scrub(text: str) -> str:
    """``text`` made fit for any text field: control characters (and bidi controls
    that do not balance) replaced by U+FFFD and cut to MAX_TEXT bytes. For details
    built from what a peer sent."""
    text = _FORBIDDEN.sub("\ufffd", text)
    raw = text.encode("utf-8")
    return defuse_bidi(text if len(raw) <= MAX_TEXT else raw[:MAX_TEXT].decode("utf-8", "ignore"))


def _check_u64(value: int, what: str) -> None:
    if not 0 <= value < _U64:
        raise RuleError(ErrorCode.MALFORMED, f"{what} is out of range")


class Event:
    """Base of every event."""

    __slots__ = ()


class ClientEvent(Event):
    """Sent by a client to the server."""

    __slots__ = ()


class ServerEvent(Event):
    """Sent by the server to a client."""

    __slots__ = ()


class SessionEvent(Event):
    """UDP session and reliability layer; never reaches the chat state."""

    __slots__ = ()


# --- client to server --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Register(ClientEvent):
    """Ask to join the chat under ``nick``; the first thing a client says."""

    nick: str

    def __post_init__(self) -> None:
        check_nick_shape(self.nick)


@dataclass(frozen=True, slots=True)
class Say(ClientEvent):
    """A chat message to everyone."""

    text: str

    def __post_init__(self) -> None:
        check_text(self.text, what="message")


@dataclass(frozen=True, slots=True)
class Act(ClientEvent):
    """An action, typed as ``/me waves``."""

    text: str

    def __post_init__(self) -> None:
        check_text(self.text, what="action")


@dataclass(frozen=True, slots=True)
class Whisper(ClientEvent):
    """A private message to one nick, typed as ``/msg NICK TEXT``."""

    to: str
    text: str

    def __post_init__(self) -> None:
        check_nick_shape(self.to)
        check_text(self.text, what="private message")


@dataclass(frozen=True, slots=True)
class ChangeNick(ClientEvent):
    """Take another nick, typed as ``/nick NEW``."""

    nick: str

    def __post_init__(self) -> None:
        check_nick_shape(self.nick)


@dataclass(frozen=True, slots=True)
class Who(ClientEvent):
    """Ask who is online, typed as ``/who``."""


@dataclass(frozen=True, slots=True)
class Help(ClientEvent):
    """Ask for the list of commands, typed as ``/help``."""


# --- server to client --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Welcome(ServerEvent):
    """Registration succeeded: the client is ``nick``, one of ``online`` members."""

    nick: str
    online: int

    def __post_init__(self) -> None:
        check_nick_shape(self.nick)
        _check_u64(self.online, "online")


@dataclass(frozen=True, slots=True)
class Message(ServerEvent):
    """A chat message from ``sender``."""

    sender: str
    text: str

    def __post_init__(self) -> None:
        check_nick_shape(self.sender)
        check_text(self.text, what="message")


@dataclass(frozen=True, slots=True)
class Action(ServerEvent):
    """An action by ``sender`` (``* alice waves``)."""

    sender: str
    text: str

    def __post_init__(self) -> None:
        check_nick_shape(self.sender)
        check_text(self.text, what="action")


@dataclass(frozen=True, slots=True)
class Private(ServerEvent):
    """A private message from ``sender`` to the receiving client only."""

    sender: str
    text: str

    def __post_init__(self) -> None:
        check_nick_shape(self.sender)
        check_text(self.text, what="private message")


@dataclass(frozen=True, slots=True)
class Joined(ServerEvent):
    """Notice: ``nick`` joined."""

    nick: str

    def __post_init__(self) -> None:
        check_nick_shape(self.nick)


@dataclass(frozen=True, slots=True)
class Left(ServerEvent):
    """Notice: ``nick`` left, for ``reason`` (may be empty)."""

    nick: str
    reason: str

    def __post_init__(self) -> None:
        check_nick_shape(self.nick)
        check_text(self.reason, what="reason", allow_empty=True)


@dataclass(frozen=True, slots=True)
class Renamed(ServerEvent):
    """Notice: ``old`` is now known as ``new``."""

    old: str
    new: str

    def __post_init__(self) -> None:
        check_nick_shape(self.old)
        check_nick_shape(self.new)


@dataclass(frozen=True, slots=True)
class WhoReply(ServerEvent):
    """Part of the answer to ``Who``: up to WHO_CHUNK nicks; ``more`` if parts follow."""

    nicks: tuple[str, ...]
    more: bool

    def __post_init__(self) -> None:
        if len(self.nicks) > WHO_CHUNK:
            raise RuleError(ErrorCode.MALFORMED, f"a WhoReply holds at most {WHO_CHUNK} nicks")
        for nick in self.nicks:
            check_nick_shape(nick)


@dataclass(frozen=True, slots=True)
class Reply(ServerEvent):
    """One line of a command's answer (``/help``) or another server remark."""

    text: str

    def __post_init__(self) -> None:
        check_text(self.text, what="reply")


@dataclass(frozen=True, slots=True)
class Error(ServerEvent):
    """A request failed or the session ends; ``code`` says why to programs."""

    code: ErrorCode
    detail: str

    def __post_init__(self) -> None:
        if not isinstance(self.code, ErrorCode):
            raise RuleError(ErrorCode.MALFORMED, f"unknown error code {self.code!r}")
        check_text(self.detail, what="error detail", allow_empty=True)


# --- either way --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping(ClientEvent, ServerEvent):
    """Are you there? Answered by a ``Pong`` with the same ``nonce``."""

    nonce: int

    def __post_init__(self) -> None:
        _check_u64(self.nonce, "nonce")


@dataclass(frozen=True, slots=True)
class Pong(ClientEvent, ServerEvent):
    """The answer to ``Ping``."""

    nonce: int

    def __post_init__(self) -> None:
        _check_u64(self.nonce, "nonce")


@dataclass(frozen=True, slots=True)
class Goodbye(ClientEvent, ServerEvent):
    """The last frame on a connection: a client quits, or the server closes it."""

    reason: str

    def __post_init__(self) -> None:
        check_text(self.reason, what="reason", allow_empty=True)


# --- UDP session and reliability ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello(SessionEvent):
    """Client to server: open a session. ``cookie`` is empty on the first try and
    echoes the server's ``Cookie`` on the second. ``padding`` makes the datagram
    large enough that the server's answer is never bigger (no amplification)."""

    cookie: bytes
    padding: bytes


@dataclass(frozen=True, slots=True)
class Cookie(SessionEvent):
    """Server to client: prove you receive at your address by echoing this."""

    cookie: bytes


@dataclass(frozen=True, slots=True)
class Accept(SessionEvent):
    """Server to client: the session is open; carry ``token`` in every datagram.
    ``unreliable``: the server runs without acknowledgements or retransmission
    (``--unreliable``), and the client must do the same."""

    token: int
    unreliable: bool = False

    def __post_init__(self) -> None:
        _check_u64(self.token, "token")


@dataclass(frozen=True, slots=True)
class Session(SessionEvent):
    """First frame of every datagram of an open session: whose it is."""

    token: int

    def __post_init__(self) -> None:
        _check_u64(self.token, "token")


@dataclass(frozen=True, slots=True)
class Data(SessionEvent):
    """One reliable segment: ``chunk`` is a whole encoded frame, or one fragment of
    it; ``remaining`` fragments of the same frame follow at the next sequence
    numbers (0 on the last or only one)."""

    seq: int
    remaining: int
    chunk: bytes

    def __post_init__(self) -> None:
        _check_u64(self.seq, "seq")
        if not 0 <= self.remaining <= 255:
            raise RuleError(ErrorCode.MALFORMED, "remaining is out of range")


@dataclass(frozen=True, slots=True)
class Ack(SessionEvent):
    """Every sequence number below ``next_expected`` arrived, and so did each
    half-open range ``[start, end)`` in ``ranges`` (selective acknowledgement)."""

    next_expected: int
    ranges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        _check_u64(self.next_expected, "next_expected")
        if len(self.ranges) > MAX_ACK_RANGES:
            raise RuleError(ErrorCode.MALFORMED, f"an Ack holds at most {MAX_ACK_RANGES} ranges")
        for start, end in self.ranges:
            _check_u64(start, "range start")
            _check_u64(end, "range end")
            if not self.next_expected < start < end:
                raise RuleError(ErrorCode.MALFORMED, "an Ack range must be non-empty and above next_expected")

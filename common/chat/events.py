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
characters after NFC, a room field is ``#`` and 1 to 32, a chat text is
non-empty UTF-8 of at most 4096 bytes with no control characters and balanced
bidi controls) and raise ``RuleError`` otherwise, so an invalid event cannot
exist (``CHECKED`` builds one from values already checked). The full nick and
room grammars and uniqueness are chat-state rules, checked by
``common.chat.hub``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Final

from common.chat.unicode_rules import bidi_unbalanced, defuse_bidi, has_bidi_control, nfc_length
from common.wire.errors import ErrorCode, RuleError
from common.wire.limits import (
    MAX_ACK_RANGES,
    MAX_EPOCH,
    MAX_HISTORY_PAGE,
    MAX_NICK,
    MAX_PASSWORD,
    MAX_ROOM,
    MAX_TEXT,
    MAX_TOPIC,
    ROOMS_CHUNK,
    WHO_CHUNK,
)

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


def check_password(password: str, *, allow_empty: bool = False) -> None:
    """Refuse a password field that is empty (unless allowed), too long or has controls.

    Raises:
        RuleError: BAD_PASSWORD.
    """
    if not password and not allow_empty:
        raise RuleError(ErrorCode.BAD_PASSWORD, "the password is empty")
    if len(password) > MAX_PASSWORD // 4 and len(password.encode("utf-8", "surrogatepass")) > MAX_PASSWORD:
        raise RuleError(ErrorCode.BAD_PASSWORD, f"a password is at most {MAX_PASSWORD} bytes of UTF-8")
    if _FORBIDDEN.search(password):
        raise RuleError(ErrorCode.BAD_PASSWORD, "a password cannot hold control characters")


def _check_epoch(epoch: str) -> None:
    if epoch and not (len(epoch) <= MAX_EPOCH and epoch.isascii() and epoch.isalnum()):
        raise RuleError(ErrorCode.MALFORMED, f"an epoch is 0 to {MAX_EPOCH} ASCII letters and digits")


def check_room_shape(room: str) -> None:
    """Refuse a room field that is not ``#`` and 1 to MAX_ROOM characters; the
    full grammar is ``common.chat.rooms``.

    Raises:
        RuleError: BAD_ROOM.
    """
    if not (room.startswith("#") and 2 <= len(room) <= MAX_ROOM + 1):
        raise RuleError(ErrorCode.BAD_ROOM, f"a room name is # and 1 to {MAX_ROOM} characters")
    if _FORBIDDEN.search(room) or has_bidi_control(room):
        raise RuleError(ErrorCode.BAD_ROOM, "a room name cannot hold control characters")


def check_topic(text: str) -> None:
    """Refuse a topic (empty allowed: no topic) over MAX_TOPIC bytes or with controls.

    Raises:
        RuleError: TEXT_TOO_LONG or BAD_TEXT.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TOPIC:
        raise RuleError(ErrorCode.TEXT_TOO_LONG, f"a topic is at most {MAX_TOPIC} bytes of UTF-8")
    check_text(text, what="topic", allow_empty=True)


def scrub(text: str) -> str:
    """``text`` made fit for any text field: control characters (and bidi controls
    that do not balance) replaced by U+FFFD and cut to MAX_TEXT bytes. For details
    built from what a peer sent."""
    text = _FORBIDDEN.sub("\ufffd", text)
    raw = text.encode("utf-8")
    return defuse_bidi(text if len(raw) <= MAX_TEXT else raw[:MAX_TEXT].decode("utf-8", "ignore"))


def _checked_builder(cls: type[Event]) -> Callable[..., Event]:
    """A function that builds ``cls`` from field values, in order, without
    checking them: each slot is set through its own descriptor, which costs a
    fifth of what the dataclass constructor and its checks do."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    setters = tuple(getattr(cls, name).__set__ for name in names)
    new = object.__new__
    if len(setters) == 6:
        set_a, set_b, set_c, set_d, set_e, set_f = setters

        # Positional on purpose: this is the hub's per-message path (a Message).
        def build6(a: object, b: object, c: object, d: object, e: object, f: object) -> Event:  # noqa: PLR0917
            event = new(cls)
            set_a(event, a)
            set_b(event, b)
            set_c(event, c)
            set_d(event, d)
            set_e(event, e)
            set_f(event, f)
            return event

        return build6
    if len(setters) == 2:
        set_a, set_b = setters

        def build2(a: object, b: object) -> Event:
            event = new(cls)
            set_a(event, a)
            set_b(event, b)
            return event

        return build2
    set_a, set_b, set_c = setters

    def build3(a: object, b: object, c: object) -> Event:
        event = new(cls)
        set_a(event, a)
        set_b(event, b)
        set_c(event, c)
        return event

    return build3


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
    """Ask to join the chat under ``nick``; the first thing a client says.
    ``password`` proves a registered nick (empty: none given). ``resume``: a
    client coming back after a lost link; the server does not put it in
    ``#lobby``, since it rejoins its own rooms (with their positions) itself."""

    nick: str
    password: str = ""
    resume: bool = False

    def __post_init__(self) -> None:
        check_nick_shape(self.nick)
        check_password(self.password, allow_empty=True)


@dataclass(frozen=True, slots=True)
class Say(ClientEvent):
    """A chat message to the members of ``room`` (the sender must be one)."""

    room: str
    text: str

    def __post_init__(self) -> None:
        check_room_shape(self.room)
        check_text(self.text, what="message")


@dataclass(frozen=True, slots=True)
class Act(ClientEvent):
    """An action in ``room``, typed as ``/me waves``."""

    room: str
    text: str

    def __post_init__(self) -> None:
        check_room_shape(self.room)
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


@dataclass(frozen=True, slots=True)
class Join(ClientEvent):
    """Join ``room`` (created if it does not exist), typed as ``/join #room``.

    ``epoch`` and ``after``: the last message of the room this client saw
    (a client rejoining after a lost link); the server replays what came
    after it. Empty and 0: replay the room's latest messages."""

    room: str
    epoch: str = ""
    after: int = 0

    def __post_init__(self) -> None:
        check_room_shape(self.room)
        _check_epoch(self.epoch)
        _check_u64(self.after, "after")


@dataclass(frozen=True, slots=True)
class History(ClientEvent):
    """Ask for up to ``count`` messages of ``room`` older than seq ``before``
    (0: the newest), typed as ``/history [N]``."""

    room: str
    before: int
    count: int

    def __post_init__(self) -> None:
        check_room_shape(self.room)
        _check_u64(self.before, "before")
        if not 1 <= self.count <= MAX_HISTORY_PAGE:
            raise RuleError(ErrorCode.BAD_USAGE, f"history comes in pages of 1 to {MAX_HISTORY_PAGE} messages")


@dataclass(frozen=True, slots=True)
class RegisterAccount(ClientEvent):
    """Register the sender's nick with ``password``, typed as ``/register PASSWORD``."""

    password: str

    def __post_init__(self) -> None:
        check_password(self.password)


@dataclass(frozen=True, slots=True)
class ChangePassword(ClientEvent):
    """Change the sender's account password, typed as ``/password OLD NEW``."""

    old: str
    new: str

    def __post_init__(self) -> None:
        check_password(self.old)
        check_password(self.new)


@dataclass(frozen=True, slots=True)
class DropAccount(ClientEvent):
    """Unregister the sender's nick, typed as ``/unregister PASSWORD``."""

    password: str

    def __post_init__(self) -> None:
        check_password(self.password)


@dataclass(frozen=True, slots=True)
class Part(ClientEvent):
    """Leave ``room``, typed as ``/part [#room] [reason]``."""

    room: str
    reason: str

    def __post_init__(self) -> None:
        check_room_shape(self.room)
        check_text(self.reason, what="reason", allow_empty=True)


@dataclass(frozen=True, slots=True)
class ListRooms(ClientEvent):
    """Ask for every room with its member count and topic, typed as ``/rooms``."""


@dataclass(frozen=True, slots=True)
class Names(ClientEvent):
    """Ask who is in ``room``, typed as ``/names [#room]``."""

    room: str

    def __post_init__(self) -> None:
        check_room_shape(self.room)


@dataclass(frozen=True, slots=True)
class GetTopic(ClientEvent):
    """Ask for ``room``'s topic, typed as ``/topic`` with no text."""

    room: str

    def __post_init__(self) -> None:
        check_room_shape(self.room)


@dataclass(frozen=True, slots=True)
class SetTopic(ClientEvent):
    """Set ``room``'s topic (empty clears it), typed as ``/topic TEXT``."""

    room: str
    text: str

    def __post_init__(self) -> None:
        check_room_shape(self.room)
        check_topic(self.text)


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
    """A chat message from ``sender`` in ``room``.

    ``seq``: its place in the room's history (from 1; a server never sends
    0); ``time``: when the server took it (Unix milliseconds); ``history``:
    replayed from the history, not said just now."""

    room: str
    sender: str
    text: str
    seq: int = 0
    time: int = 0
    history: bool = False

    def __post_init__(self) -> None:
        check_room_shape(self.room)
        check_nick_shape(self.sender)
        check_text(self.text, what="message")
        _check_u64(self.seq, "seq")
        _check_u64(self.time, "time")


@dataclass(frozen=True, slots=True)
class Action(ServerEvent):
    """An action by ``sender`` in ``room`` (``* alice waves``).

    ``seq``: its place in the room's history (from 1; a server never sends
    0); ``time``: when the server took it (Unix milliseconds); ``history``:
    replayed from the history, not said just now."""

    room: str
    sender: str
    text: str
    seq: int = 0
    time: int = 0
    history: bool = False

    def __post_init__(self) -> None:
        check_room_shape(self.room)
        check_nick_shape(self.sender)
        check_text(self.text, what="action")
        _check_u64(self.seq, "seq")
        _check_u64(self.time, "time")


@dataclass(frozen=True, slots=True)
class Private(ServerEvent):
    """A private message from ``sender`` to the receiving client only, sent
    at ``time`` (Unix milliseconds). ``kept``: it was kept while the receiver
    was offline and is delivered at its login."""

    sender: str
    text: str
    time: int = 0
    kept: bool = False

    def __post_init__(self) -> None:
        check_nick_shape(self.sender)
        check_text(self.text, what="private message")
        _check_u64(self.time, "time")


@dataclass(frozen=True, slots=True)
class Joined(ServerEvent):
    """Notice: ``nick`` joined ``room``. To the joiner too: it is in the room now."""

    room: str
    nick: str

    def __post_init__(self) -> None:
        check_room_shape(self.room)
        check_nick_shape(self.nick)


@dataclass(frozen=True, slots=True)
class Parted(ServerEvent):
    """Notice: ``nick`` left ``room`` (not the server), for ``reason`` (may be empty)."""

    room: str
    nick: str
    reason: str

    def __post_init__(self) -> None:
        check_room_shape(self.room)
        check_nick_shape(self.nick)
        check_text(self.reason, what="reason", allow_empty=True)


@dataclass(frozen=True, slots=True)
class Left(ServerEvent):
    """Notice: ``nick`` left the server, for ``reason`` (may be empty)."""

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
class Topic(ServerEvent):
    """``room``'s topic ``text`` (empty: none), set by ``setter`` at ``time`` (Unix
    seconds; empty and 0 if never set). ``changed``: a notice that it was just
    set; otherwise an answer to ``GetTopic`` or a joiner's briefing."""

    room: str
    text: str
    setter: str
    time: int
    changed: bool

    def __post_init__(self) -> None:
        check_room_shape(self.room)
        check_topic(self.text)
        if self.setter:
            check_nick_shape(self.setter)
        _check_u64(self.time, "time")


@dataclass(frozen=True, slots=True)
class WhoReply(ServerEvent):
    """Part of the answer to ``Who`` (``room`` empty) or ``Names`` (``room`` named):
    up to WHO_CHUNK nicks; ``more`` if parts follow."""

    room: str
    nicks: tuple[str, ...]
    more: bool

    def __post_init__(self) -> None:
        if self.room:
            check_room_shape(self.room)
        if len(self.nicks) > WHO_CHUNK:
            raise RuleError(ErrorCode.MALFORMED, f"a WhoReply holds at most {WHO_CHUNK} nicks")
        for nick in self.nicks:
            check_nick_shape(nick)


@dataclass(frozen=True, slots=True)
class Replay(ServerEvent):
    """The history of ``room`` from seq ``first`` to ``last`` follows (none if
    ``first > last``), as Messages and Actions marked ``history``; sent to a
    joiner and in answer to ``History``. ``epoch`` names the room's numbering.
    ``gap``: what follows does not continue from where the Join asked, so
    messages are lost to this client (the history was trimmed or replaced)."""

    room: str
    epoch: str
    first: int
    last: int
    gap: bool

    def __post_init__(self) -> None:
        check_room_shape(self.room)
        _check_epoch(self.epoch)
        _check_u64(self.first, "first")
        _check_u64(self.last, "last")


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """One row of a ``RoomList``: a room, how many are in it, its topic."""

    room: str
    members: int
    topic: str

    def __post_init__(self) -> None:
        check_room_shape(self.room)
        _check_u64(self.members, "members")
        check_topic(self.topic)


@dataclass(frozen=True, slots=True)
class RoomList(ServerEvent):
    """Part of the answer to ``ListRooms``: up to ROOMS_CHUNK rooms by name;
    ``more`` if parts follow."""

    rooms: tuple[RoomInfo, ...]
    more: bool

    def __post_init__(self) -> None:
        if len(self.rooms) > ROOMS_CHUNK:
            raise RuleError(ErrorCode.MALFORMED, f"a RoomList holds at most {ROOMS_CHUNK} rooms")
        for info in self.rooms:
            if not isinstance(info, RoomInfo):
                raise RuleError(ErrorCode.MALFORMED, "a RoomList holds RoomInfo rows")


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


#: Server events that belong to one room: they carry a ``room`` field and are
#: shown with the room when it is not the reader's current one. (Of these,
#: Message and Action are numbered and kept in the room's history.)
ROOM_EVENTS: Final = (Message, Action, Joined, Parted, Topic)


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


#: Builders of events from values that have all passed the event's checks
#: already, for the hot path only: the hub re-addressing what a validated Say
#: carried (its text becomes a Message's, with a room and a nick it validated
#: when they were made), and the decoder's fast path for Say. Checking again on
#: every message cost a tenth of the server's time. Anything from a peer goes
#: through the constructor (or its checks) first.
CHECKED: Final[dict[type[Event], Callable[..., Event]]] = {cls: _checked_builder(cls) for cls in (Say, Message, Action)}

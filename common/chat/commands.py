"""What a user types, turned into client events.

``/join #room``, ``/part [#room] [reason]``, ``/rooms``, ``/topic [text]``,
``/names [#room]``, ``/nick NEW``, ``/msg NICK|#room TEXT``, ``/me ACTION``,
``/who``, ``/history [N]``, ``/register PASSWORD``, ``/login PASSWORD``,
``/password OLD NEW``, ``/unregister PASSWORD``, ``/help`` and
``/quit [REASON]`` are commands; ``//text`` says
``/text``; any other line starting with ``/`` is an unknown command;
everything else is a message to the current room.

``parse_input`` is one line, one event: what the text dialect reads.
``parse_typed`` is for a client's own person: a message, action or private
message over ``MAX_TEXT`` bytes becomes several, cut between characters
(``split_text``), so a long line is sent rather than refused.

The current room is the reader's state (``common.chat.view`` keeps it), so the
parser takes it as ``here``. Both clients use this for their users and the
servers for the text dialect, so no two of them disagree on what a line means.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from common.chat import events as ev
from common.wire.errors import ErrorCode, RuleError
from common.wire.limits import MAX_HISTORY_PAGE, MAX_TEXT


@dataclass(frozen=True, slots=True)
class _Said:
    """A chat text not built into its event yet: ``build(text)`` makes it,
    ``build(piece)`` makes each piece of a text too long for one event."""

    build: Callable[[str], ev.ClientEvent]
    text: str


#: A parser gets what follows the command name and the current room (None: in no room).
_Parse = Callable[[str, str | None], "ev.ClientEvent | _Said"]


@dataclass(frozen=True, slots=True)
class _Command:
    usage: str
    summary: str
    parse: _Parse


def _usage(usage: str) -> RuleError:
    return RuleError(ErrorCode.BAD_USAGE, f"usage: {usage}")


def _in_a_room(here: str | None) -> str:
    if here is None:
        raise RuleError(ErrorCode.NOT_IN_ROOM, "you are in no room; /join #room first")
    return here


def _one_word(usage: str, build: Callable[[str], ev.ClientEvent]) -> _Parse:
    def parse(rest: str, here: str | None) -> ev.ClientEvent:
        words = rest.split()
        if len(words) != 1:
            raise _usage(usage)
        return build(words[0])

    return parse


def _no_argument(usage: str, build: Callable[[], ev.ClientEvent]) -> _Parse:
    def parse(rest: str, here: str | None) -> ev.ClientEvent:
        if rest.strip():
            raise _usage(usage)
        return build()

    return parse


def _room_or_here(usage: str, build: Callable[[str], ev.ClientEvent]) -> _Parse:
    def parse(rest: str, here: str | None) -> ev.ClientEvent:
        words = rest.split()
        if len(words) > 1:
            raise _usage(usage)
        return build(words[0] if words else _in_a_room(here))

    return parse


def _private(rest: str, here: str | None) -> _Said:
    target, _, text = rest.strip().partition(" ")
    text = text.strip()
    if not target or not text:
        raise _usage("/msg NICK|#room TEXT")
    if target.startswith("#"):
        ev.check_room_shape(target)  # refused before any piece is cut
        return _Said(lambda piece: ev.Say(target, piece), text)
    ev.check_nick_shape(target)
    return _Said(lambda piece: ev.Whisper(target, piece), text)


def _action(rest: str, here: str | None) -> _Said:
    text = rest.strip()
    if not text:
        raise _usage("/me ACTION")
    room = _in_a_room(here)
    return _Said(lambda piece: ev.Act(room, piece), text)


def _say(room: str, text: str) -> _Said:
    return _Said(lambda piece: ev.Say(room, piece), text)


def _part(rest: str, here: str | None) -> ev.ClientEvent:
    rest = rest.strip()
    if rest.startswith("#"):
        room, _, reason = rest.partition(" ")
        return ev.Part(room, reason.strip())
    return ev.Part(_in_a_room(here), rest)


def _topic(rest: str, here: str | None) -> ev.ClientEvent:
    text = rest.strip()
    room = _in_a_room(here)
    return ev.SetTopic(room, text) if text else ev.GetTopic(room)


#: Messages one /history brings when it names no number.
HISTORY_PAGE: Final = 50


def _history(rest: str, here: str | None) -> ev.ClientEvent:
    words = rest.split()
    if len(words) > 1 or (words and not words[0].isdigit()):
        raise _usage("/history [N]")
    count = int(words[0]) if words else HISTORY_PAGE
    # ``before`` 0: the newest; a view fills in the oldest it has shown.
    return ev.History(_in_a_room(here), 0, min(count, MAX_HISTORY_PAGE) or 1)


def _password(rest: str, here: str | None) -> ev.ClientEvent:
    words = rest.split()
    if len(words) != 2:
        raise _usage("/password OLD NEW")
    return ev.ChangePassword(words[0], words[1])


def _login(rest: str, here: str | None) -> ev.ClientEvent:
    # The text dialect reads /login before the nick is taken (common.session.text);
    # anywhere else it is too late or too early.
    raise RuleError(ErrorCode.BAD_USAGE, "/login PASSWORD goes right after a registered nick, before anything else")


#: Every command a user can type, by name, in the order /help lists them.
COMMANDS: Final = {
    "join": _Command("/join #room", "join a room (made if new) and talk there", _one_word("/join #room", ev.Join)),
    "part": _Command("/part [#room] [REASON]", "leave a room (this one by default)", _part),
    "rooms": _Command("/rooms", "list the rooms, their sizes and topics", _no_argument("/rooms", ev.ListRooms)),
    "topic": _Command("/topic [TEXT]", "show or set this room's topic", _topic),
    "names": _Command("/names [#room]", "list who is in a room", _room_or_here("/names [#room]", ev.Names)),
    "msg": _Command("/msg NICK|#room TEXT", "message one person, or a room of yours", _private),
    "me": _Command("/me ACTION", "describe an action: /me waves", _action),
    "nick": _Command("/nick NEW", "take another nick", _one_word("/nick NEW", ev.ChangeNick)),
    "who": _Command("/who", "list who is online", _no_argument("/who", ev.Who)),
    "history": _Command("/history [N]", "show N older messages of this room", _history),
    "register": _Command(
        "/register PASSWORD",
        "register your nick: it takes the password",
        _one_word("/register PASSWORD", ev.RegisterAccount),
    ),
    "login": _Command("/login PASSWORD", "after a registered nick: prove it is yours", _login),
    "password": _Command("/password OLD NEW", "change your account's password", _password),
    "unregister": _Command(
        "/unregister PASSWORD", "drop your nick's registration", _one_word("/unregister PASSWORD", ev.DropAccount)
    ),
    "help": _Command("/help", "list the commands", _no_argument("/help", ev.Help)),
    "quit": _Command("/quit [REASON]", "leave the chat", lambda rest, here: ev.Goodbye(rest.strip())),
}

#: The lines that answer /help.
HELP_LINES: Final = (
    *(f"{cmd.usage:<22} {cmd.summary}" for cmd in COMMANDS.values()),
    f"{'//text':<22} send a message that starts with /",
    f"{'text':<22} say it in the current room",
)


def _parse(line: str, here: str | None) -> ev.ClientEvent | _Said | None:
    if not line.strip():
        return None
    if line.startswith("//"):
        return _say(_in_a_room(here), line[1:])
    if not line.startswith("/"):
        return _say(_in_a_room(here), line)
    name, _, rest = line[1:].partition(" ")
    command = COMMANDS.get(name.lower())
    if command is None:
        raise RuleError(ErrorCode.UNKNOWN_COMMAND, f"unknown command /{name}; /help lists the commands")
    return command.parse(rest, here)


def parse_input(line: str, here: str | None) -> ev.ClientEvent | None:
    """Turn one typed line (without its newline) into the event it asks for.

    Args:
        here: the current room, where a plain line is said; None if in no room.

    Returns:
        None for a blank line, which asks for nothing.

    Raises:
        RuleError: UNKNOWN_COMMAND, BAD_USAGE, NOT_IN_ROOM, or what the event
            refuses (TEXT_TOO_LONG, BAD_TEXT, BAD_NICK, BAD_ROOM).
    """
    parsed = _parse(line, here)
    return parsed.build(parsed.text) if isinstance(parsed, _Said) else parsed


def parse_typed(line: str, here: str | None) -> tuple[ev.ClientEvent, ...]:
    """As ``parse_input``, but a chat text over ``MAX_TEXT`` bytes becomes one
    event per piece (``split_text``); every piece is built before any is
    returned, so a line is sent whole or refused whole.

    Returns:
        No event for a blank line.

    Raises:
        RuleError: as ``parse_input``, except TEXT_TOO_LONG for a chat text.
    """
    parsed = _parse(line, here)
    if parsed is None:
        return ()
    if isinstance(parsed, _Said):
        return tuple(parsed.build(piece) for piece in split_text(parsed.text))
    return (parsed,)


def _clings(char: str) -> bool:
    """A character that belongs with the one before it: a combining mark, a
    zero-width joiner, a variation selector. A cut never falls before one."""
    return unicodedata.category(char).startswith("M") or char == "\u200d" or "\ufe00" <= char <= "\ufe0f"


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """``text`` in pieces of at most ``limit`` bytes of UTF-8, in order, which
    joined give ``text`` back.

    Strategy: take as many characters as fit; if a space falls in the second
    half of that, cut after the last one (the words stay whole), otherwise cut
    between characters, moved back before any combining mark, joiner or
    variation selector so that a letter keeps its accents.
    """
    pieces: list[str] = []
    while len(text.encode("utf-8", "surrogatepass")) > limit:
        size, end = 0, 0
        while end < len(text):
            width = len(text[end].encode("utf-8", "surrogatepass"))
            if size + width > limit:
                break
            size, end = size + width, end + 1
        space = text.rfind(" ", 0, end)
        if space >= end // 2:
            end = space + 1
        else:
            cut = end  # text[end] exists: the rest is too long to be all taken
            while cut > 0 and _clings(text[cut]):
                cut -= 1
            end = cut or end  # nothing but marks: cut between them after all
        pieces.append(text[:end])
        text = text[end:]
    pieces.append(text)
    return pieces

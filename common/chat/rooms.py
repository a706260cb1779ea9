"""Room rules: what a room may be called, and when two names are one room.

A room name is ``#`` followed by a name that obeys the nick rules
(``common.chat.nicks``: 1 to 32 characters of the nick alphabet), compared the
way nicks are: ``#Кухня`` and ``#кухня`` are one room, and so is any name that
nicks would take for the same.
"""

from __future__ import annotations

from typing import Final

from common.chat.nicks import check_nick, nick_key
from common.wire.errors import ErrorCode, RuleError

#: The room every member starts in.
LOBBY: Final = "#lobby"


def check_room(room: str) -> str:
    """Return ``room`` in NFC form if it obeys the room rules.

    Raises:
        RuleError: BAD_ROOM, with a detail a person can act on.
    """
    if not room.startswith("#"):
        raise RuleError(ErrorCode.BAD_ROOM, "a room name starts with #, as in #lobby")
    try:
        return "#" + check_nick(room[1:])
    except RuleError as exc:
        raise RuleError(ErrorCode.BAD_ROOM, exc.detail.replace("a nick", "a room name after #")) from None


def room_key(room: str) -> str:
    """The form under which room names are compared: ``#`` and the nick key."""
    return "#" + nick_key(room[1:])

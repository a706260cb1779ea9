"""What a user types, turned into client events.

``/nick NEW``, ``/msg NICK TEXT``, ``/me ACTION``, ``/who``, ``/help`` and
``/quit [REASON]`` are commands; ``//text`` says ``/text``; any other line
starting with ``/`` is an unknown command; everything else is a message.
Both clients use this for their users and the TCP server for its plain-text
dialect, so the three never disagree on what a line means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from common.chat import events as ev
from common.wire.errors import ErrorCode, RuleError


@dataclass(frozen=True, slots=True)
class _Command:
    usage: str
    summary: str
    build: Callable[[str], ev.ClientEvent]


def _one_word(usage: str, build: Callable[[str], ev.ClientEvent]) -> Callable[[str], ev.ClientEvent]:
    def parse(rest: str) -> ev.ClientEvent:
        words = rest.split()
        if len(words) != 1:
            raise RuleError(ErrorCode.BAD_USAGE, f"usage: {usage}")
        return build(words[0])

    return parse


def _no_argument(usage: str, build: Callable[[], ev.ClientEvent]) -> Callable[[str], ev.ClientEvent]:
    def parse(rest: str) -> ev.ClientEvent:
        if rest.strip():
            raise RuleError(ErrorCode.BAD_USAGE, f"usage: {usage}")
        return build()

    return parse


def _private(rest: str) -> ev.ClientEvent:
    target, _, text = rest.strip().partition(" ")
    text = text.strip()
    if not target or not text:
        raise RuleError(ErrorCode.BAD_USAGE, "usage: /msg NICK TEXT")
    return ev.Whisper(target, text)


def _action(rest: str) -> ev.ClientEvent:
    text = rest.strip()
    if not text:
        raise RuleError(ErrorCode.BAD_USAGE, "usage: /me ACTION")
    return ev.Act(text)


#: Every command a user can type, by name, in the order /help lists them.
COMMANDS: Final = {
    "nick": _Command("/nick NEW", "take another nick", _one_word("/nick NEW", ev.ChangeNick)),
    "msg": _Command("/msg NICK TEXT", "send a private message", _private),
    "me": _Command("/me ACTION", "describe an action: /me waves", _action),
    "who": _Command("/who", "list who is online", _no_argument("/who", ev.Who)),
    "help": _Command("/help", "list the commands", _no_argument("/help", ev.Help)),
    "quit": _Command("/quit [REASON]", "leave the chat", lambda rest: ev.Goodbye(rest.strip())),
}

#: The lines that answer /help.
HELP_LINES: Final = (
    *(f"{cmd.usage:<16} {cmd.summary}" for cmd in COMMANDS.values()),
    "//text           send a message that starts with /",
)


def parse_input(line: str) -> ev.ClientEvent | None:
    """Turn one typed line (without its newline) into the event it asks for.

    Returns None for a blank line, which asks for nothing.

    Raises:
        RuleError: UNKNOWN_COMMAND, BAD_USAGE, or what the event refuses
            (TEXT_TOO_LONG, BAD_TEXT, BAD_NICK).
    """
    if not line.strip():
        return None
    if line.startswith("//"):
        return ev.Say(line[1:])
    if not line.startswith("/"):
        return ev.Say(line)
    name, _, rest = line[1:].partition(" ")
    command = COMMANDS.get(name.lower())
    if command is None:
        raise RuleError(ErrorCode.UNKNOWN_COMMAND, f"unknown command /{name}; /help lists the commands")
    return command.build(rest)

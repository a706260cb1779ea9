"""What a user types, turned into events."""

from __future__ import annotations

import pytest

from common.chat import events as ev
from common.chat.commands import COMMANDS, HELP_LINES, parse_input
from common.wire.errors import ErrorCode, RuleError


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("hello", ev.Say("hello")),
        ("  indented stays", ev.Say("  indented stays")),
        ("//me is not a command", ev.Say("/me is not a command")),
        ("//", ev.Say("/")),
        ("/nick alicia", ev.ChangeNick("alicia")),
        ("/NICK  Маша ", ev.ChangeNick("Маша")),
        ("/msg bob psst, over here", ev.Whisper("bob", "psst, over here")),
        ("/msg   bob    hi", ev.Whisper("bob", "hi")),
        ("/me waves", ev.Act("waves")),
        ("/who", ev.Who()),
        ("/help", ev.Help()),
        ("/quit", ev.Goodbye("")),
        ("/quit see you tomorrow", ev.Goodbye("see you tomorrow")),
    ],
)
def test_lines_become_events(line: str, event: ev.ClientEvent) -> None:
    assert parse_input(line) == event


@pytest.mark.parametrize("line", ["", "   ", "\t"])
def test_blank_lines_ask_for_nothing(line: str) -> None:
    assert parse_input(line) is None


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("/dance", ErrorCode.UNKNOWN_COMMAND),
        ("/", ErrorCode.UNKNOWN_COMMAND),
        ("/nick", ErrorCode.BAD_USAGE),
        ("/nick two words", ErrorCode.BAD_USAGE),
        ("/msg bob", ErrorCode.BAD_USAGE),
        ("/msg", ErrorCode.BAD_USAGE),
        ("/me", ErrorCode.BAD_USAGE),
        ("/who is there", ErrorCode.BAD_USAGE),
        ("/nick " + "x" * 40, ErrorCode.BAD_NICK),
        ("x" * 5000, ErrorCode.TEXT_TOO_LONG),
        ("/me \x1b[2J", ErrorCode.BAD_TEXT),
    ],
)
def test_bad_lines_say_why(line: str, code: ErrorCode) -> None:
    with pytest.raises(RuleError) as caught:
        parse_input(line)
    assert caught.value.code is code


def test_help_lists_every_command() -> None:
    text = "\n".join(HELP_LINES)
    for name in COMMANDS:
        assert f"/{name}" in text
    assert "//text" in text

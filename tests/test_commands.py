"""What a user types, turned into events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.chat import events as ev
from common.chat.commands import COMMANDS, HELP_LINES, parse_input, parse_typed, split_text
from common.wire.errors import ErrorCode, RuleError

HERE = "#dev"


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("hello", ev.Say(HERE, "hello")),
        ("  indented stays", ev.Say(HERE, "  indented stays")),
        ("//me is not a command", ev.Say(HERE, "/me is not a command")),
        ("//", ev.Say(HERE, "/")),
        ("/nick alicia", ev.ChangeNick("alicia")),
        ("/NICK  Маша ", ev.ChangeNick("Маша")),
        ("/msg bob psst, over here", ev.Whisper("bob", "psst, over here")),
        ("/msg   bob    hi", ev.Whisper("bob", "hi")),
        ("/msg #ops deploy at 5", ev.Say("#ops", "deploy at 5")),
        ("/me waves", ev.Act(HERE, "waves")),
        ("/who", ev.Who()),
        ("/help", ev.Help()),
        ("/quit", ev.Goodbye("")),
        ("/quit see you tomorrow", ev.Goodbye("see you tomorrow")),
        ("/join #Кухня", ev.Join("#Кухня")),
        ("/part", ev.Part(HERE, "")),
        ("/part lunch time", ev.Part(HERE, "lunch time")),
        ("/part #ops", ev.Part("#ops", "")),
        ("/part #ops bye all", ev.Part("#ops", "bye all")),
        ("/rooms", ev.ListRooms()),
        ("/topic", ev.GetTopic(HERE)),
        ("/topic release on Friday", ev.SetTopic(HERE, "release on Friday")),
        ("/names", ev.Names(HERE)),
        ("/names #ops", ev.Names("#ops")),
    ],
)
def test_lines_become_events(line: str, event: ev.ClientEvent) -> None:
    assert parse_input(line, HERE) == event


@pytest.mark.parametrize("line", ["", "   ", "\t"])
def test_blank_lines_ask_for_nothing(line: str) -> None:
    assert parse_input(line, HERE) is None


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
        ("/join", ErrorCode.BAD_USAGE),
        ("/join #a #b", ErrorCode.BAD_USAGE),
        ("/join dev", ErrorCode.BAD_ROOM),
        ("/names #a #b", ErrorCode.BAD_USAGE),
        ("/rooms now", ErrorCode.BAD_USAGE),
        ("/nick " + "x" * 40, ErrorCode.BAD_NICK),
        ("x" * 5000, ErrorCode.TEXT_TOO_LONG),
        ("/me \x1b[2J", ErrorCode.BAD_TEXT),
        ("/topic " + "x" * 391, ErrorCode.TEXT_TOO_LONG),
    ],
)
def test_bad_lines_say_why(line: str, code: ErrorCode) -> None:
    with pytest.raises(RuleError) as caught:
        parse_input(line, HERE)
    assert caught.value.code is code


@pytest.mark.parametrize("line", ["hello", "/me waves", "/part", "/topic", "/names", "//x"])
def test_lines_for_the_current_room_need_one(line: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_input(line, None)
    assert caught.value.code is ErrorCode.NOT_IN_ROOM


def test_lines_naming_a_room_need_no_current_one() -> None:
    assert parse_input("/join #dev", None) == ev.Join("#dev")
    assert parse_input("/msg #dev hi", None) == ev.Say("#dev", "hi")
    assert parse_input("/part #dev", None) == ev.Part("#dev", "")


def test_help_lists_every_command() -> None:
    text = "\n".join(HELP_LINES)
    for name in COMMANDS:
        assert f"/{name}" in text
    assert "//text" in text


@given(st.text(min_size=1, max_size=3000), st.integers(4, 600))
def test_split_text_keeps_every_character_in_pieces_that_fit(text: str, limit: int) -> None:
    text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates: they have no UTF-8
    pieces = split_text(text, limit)
    assert "".join(pieces) == text
    assert all(0 < len(p.encode()) <= limit for p in pieces)


def test_split_text_cuts_after_a_space_and_never_before_a_mark() -> None:
    assert split_text("aaaa bbbb cc", 10) == ["aaaa bbbb ", "cc"]
    assert split_text("abcdefghijkl", 5) == ["abcde", "fghij", "kl"]
    # e + U+0301 is 3 bytes; a cut at 3 bytes would leave the accent alone.
    assert split_text("xe\u0301e\u0301", 3) == ["x", "e\u0301", "e\u0301"]


def test_parse_typed_sends_a_long_text_in_pieces() -> None:
    assert parse_typed("/me " + "w" * 4100, HERE) == (ev.Act(HERE, "w" * 4096), ev.Act(HERE, "wwww"))
    assert parse_typed("hi", HERE) == (ev.Say(HERE, "hi"),)
    assert parse_typed("  ", HERE) == ()
    with pytest.raises(RuleError) as caught:
        parse_typed("/topic " + "x" * 391, HERE)  # a topic is not a message: still refused
    assert caught.value.code is ErrorCode.TEXT_TOO_LONG

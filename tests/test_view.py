"""What a client knows of itself: nick, rooms, the current room, and what lines mean."""

from __future__ import annotations

from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.chat.view import ClientView
from common.wire.errors import ErrorCode


def registered(nick: str = "alice") -> ClientView:
    view = ClientView(nick)
    view.observe(ev.Welcome(nick, 1))
    view.observe(ev.Joined(LOBBY, nick))
    return view


def test_registration_puts_the_lobby_first_and_current() -> None:
    view = registered()
    assert view.current == LOBBY
    assert list(view.rooms.values()) == [LOBBY]
    assert view.interpret("hi").send == ev.Say(LOBBY, "hi")


def test_join_switches_at_once_and_the_servers_spelling_wins() -> None:
    view = registered()
    assert view.interpret("/join #dev").send == ev.Join("#dev")
    assert view.interpret("straight away").send == ev.Say("#dev", "straight away")
    view.observe(ev.Joined("#Dev", "alice"))
    assert view.current == "#Dev"
    assert list(view.rooms.values()) == [LOBBY, "#Dev"]


def test_joining_a_room_you_are_in_just_switches_locally() -> None:
    view = registered()
    view.interpret("/join #dev")
    view.observe(ev.Joined("#dev", "alice"))
    typed = view.interpret("/join #LOBBY")
    assert typed.send is None
    assert typed.show == (ev.Reply("now talking in #lobby"),)
    assert view.current == LOBBY


def test_a_refused_join_puts_the_previous_room_back() -> None:
    view = registered()
    view.interpret("/join #full")
    view.observe(ev.Error(ErrorCode.TOO_MANY_ROOMS, "you are in 32 rooms"))
    assert view.current == LOBBY
    view.interpret("/join #a b")
    view.observe(ev.Error(ErrorCode.BAD_ROOM, "' ' cannot be in a room name"))
    assert view.current == LOBBY
    # Other errors do not touch the view.
    view.interpret("/join #ok")
    view.observe(ev.Error(ErrorCode.NO_SUCH_NICK, "nobody is called bob"))
    assert view.current == "#ok"


def test_others_joining_change_nothing() -> None:
    view = registered()
    view.observe(ev.Joined("#dev", "bob"))
    view.observe(ev.Parted(LOBBY, "bob", ""))
    assert view.current == LOBBY and list(view.rooms) == ["#lobby"]


def test_parting_the_current_room_falls_back_to_the_latest_joined() -> None:
    view = registered()
    for room in ("#a", "#b"):
        view.interpret(f"/join {room}")
        view.observe(ev.Joined(room, "alice"))
    view.interpret("/join #a")  # current, not the latest joined
    assert view.interpret("/part").send == ev.Part("#a", "")
    assert view.current == "#b"
    view.observe(ev.Parted("#a", "alice", ""))  # the server's word changes nothing more
    assert view.current == "#b"
    view.interpret("/part #b")
    view.interpret("/part")
    assert view.current is None
    typed = view.interpret("anyone?")
    assert typed.send is None and isinstance(typed.show[0], ev.Error)
    assert typed.show[0].code is ErrorCode.NOT_IN_ROOM


def test_a_part_the_client_did_not_type_is_followed() -> None:
    view = registered()
    view.interpret("/join #dev")
    view.observe(ev.Joined("#dev", "alice"))
    view.observe(ev.Parted("#dev", "alice", "kicked"))
    assert view.current == LOBBY


def test_renames_are_followed_under_casefolding() -> None:
    view = registered("Маша")
    view.observe(ev.Renamed("МАША", "dasha"))
    assert view.nick == "dasha"
    view.observe(ev.Joined("#dev", "Dasha"))  # any spelling of its own nick
    assert "#dev" in view.rooms
    view.observe(ev.Renamed("bob", "robert"))
    assert view.nick == "dasha"


def test_rendering_marks_lines_from_other_rooms() -> None:
    view = registered()
    assert view.render(ev.Message(LOBBY, "bob", "hi")) == "bob: hi"
    assert view.render(ev.Message("#dev", "bob", "hi")) == "[#dev] bob: hi"
    assert view.render(ev.Ping(1)) is None


def test_help_and_typos_are_answered_locally() -> None:
    view = registered()
    help_typed = view.interpret("/help")
    assert help_typed.send is None and all(isinstance(e, ev.Reply) for e in help_typed.show)
    typo = view.interpret("/jion #dev")
    assert typo.send is None and isinstance(typo.show[0], ev.Error)
    assert typo.show[0].code is ErrorCode.UNKNOWN_COMMAND


def test_typed_text_goes_line_by_line_and_long_texts_in_pieces() -> None:
    view = registered()
    done = view.interpret_typed("one\r\n/join #dev\n\n/jion #x\ntwo\r" + "x" * 5000)
    assert [t.send for t in done if t.send is not None] == [
        ev.Say(LOBBY, "one"),
        ev.Join("#dev"),
        ev.Say("#dev", "two"),  # the join made #dev current for the lines after it
        ev.Say("#dev", "x" * 4096),
        ev.Say("#dev", "x" * 904),
    ]
    refused = [t for t in done if t.refused]
    assert [t.refused for t in refused] == ["/jion #x"]
    assert isinstance(refused[0].show[0], ev.Error)


def test_a_line_with_a_bad_piece_is_refused_whole() -> None:
    view = registered()
    done = view.interpret_typed("x" * 5000 + "\x1b[2J")
    assert [t.send for t in done] == [None]
    assert done[0].refused.endswith("\x1b[2J")


def test_the_view_keeps_each_rooms_position_for_resuming_and_paging() -> None:
    view = ClientView()
    for event in (
        ev.Welcome("alice", 1),
        ev.Joined(LOBBY, "alice"),
        ev.Replay(LOBBY, "e1", 4, 6, False),
        ev.Message(LOBBY, "bob", "four", 4, 0, True),
        ev.Message(LOBBY, "bob", "five", 5, 0, True),
        ev.Message(LOBBY, "bob", "six", 6, 0, True),
        ev.Joined("#dev", "alice"),
        ev.Replay("#dev", "e2", 1, 0, False),
        ev.Message(LOBBY, "alice", "seven", 7, 0),
    ):
        view.observe(event)
    assert view.resume() == [ev.Join(LOBBY, "e1", 7), ev.Join("#dev", "e2", 0)]
    # /history pages back from the oldest message shown.
    typed = view.interpret("/history 10")
    assert typed.send == ev.History(LOBBY, 4, 10)
    answer = ev.Replay(LOBBY, "e1", 5, 3, False)  # nothing older
    view.observe(answer)
    assert view.render(answer) == f"* no older messages in {LOBBY}"
    # A room left is forgotten; a new epoch starts the room's position over.
    view.interpret("/part #dev")
    view.observe(ev.Replay(LOBBY, "e9", 1, 2, True))
    assert view.resume() == [ev.Join(LOBBY, "e9", 0)]

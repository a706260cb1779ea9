"""The hub's memory (issue 9): replay on join, resuming after a lost link,
/history, accounts, and private messages kept for the offline."""

from __future__ import annotations

import pytest

from common.chat import events as ev
from common.chat.hub import Delivery, Hub, Vetted
from common.chat.log import MemoryStore
from common.chat.rooms import LOBBY
from common.wire.errors import ErrorCode

NOW = 1_798_761_600.0
T = int(NOW * 1000)


def events_to(conn: int, deliveries: list[Delivery[int]]) -> list[ev.ServerEvent]:
    return [d.event for d in deliveries if conn in d.recipients]


def register(hub: Hub[int], conn: int, nick: str, **register: object) -> list[ev.ServerEvent]:
    hub.connect(conn)
    return events_to(conn, hub.receive(conn, ev.Register(nick, **register), NOW))  # type: ignore[arg-type]


def talk(hub: Hub[int], conn: int, room: str, *texts: str) -> list[int]:
    """Say ``texts`` in ``room``; the seqs the hub gave them."""
    seqs = []
    for text in texts:
        (delivery,) = hub.receive(conn, ev.Say(room, text), NOW)
        assert isinstance(delivery.event, ev.Message)
        seqs.append(delivery.event.seq)
    return seqs


def replayed(events: list[ev.ServerEvent]) -> tuple[ev.Replay, list[str]]:
    """The Replay among ``events`` and the texts of the history that follows it."""
    at = next(i for i, e in enumerate(events) if isinstance(e, ev.Replay))
    replay = events[at]
    assert isinstance(replay, ev.Replay)
    texts = []
    for event in events[at + 1 :]:
        if not (isinstance(event, ev.Message | ev.Action) and event.history):
            break
        texts.append(event.text)
    return replay, texts


# --- replay ------------------------------------------------------------------------


def test_a_joiner_is_shown_the_latest_messages_marked_as_history() -> None:
    hub: Hub[int] = Hub(replay=3)
    register(hub, 1, "alice")
    seqs = talk(hub, 1, LOBBY, "one", "two", "three", "four")
    assert seqs == [1, 2, 3, 4]
    replay, texts = replayed(register(hub, 2, "bob"))
    assert texts == ["two", "three", "four"]
    assert (replay.first, replay.last, replay.gap) == (2, 4, False)
    history = register(hub, 3, "carol")[-1]
    assert history == ev.Message(LOBBY, "alice", "four", 4, T, True)


def test_an_empty_room_replays_nothing_and_replay_0_shows_nothing() -> None:
    hub: Hub[int] = Hub(replay=0)
    register(hub, 1, "alice")
    talk(hub, 1, LOBBY, "one")
    replay, texts = replayed(register(hub, 2, "bob"))
    assert texts == []
    assert (replay.first, replay.last, replay.gap) == (2, 1, False)


def test_resuming_replays_exactly_what_was_missed_in_order() -> None:
    hub: Hub[int] = Hub(replay=2)
    register(hub, 1, "alice")
    register(hub, 2, "bob")
    talk(hub, 1, LOBBY, "a", "b")
    epoch = hub._store.open_room("#lobby", LOBBY).epoch
    hub.disconnect(2, "link lost")
    talk(hub, 1, LOBBY, "c", "d", "e", "f")
    # Back with resume: no automatic lobby, then a Join saying where it was.
    back = register(hub, 2, "bob", resume=True)
    assert [type(e) for e in back] == [ev.Welcome]
    replay, texts = replayed(events_to(2, hub.receive(2, ev.Join(LOBBY, epoch, 2), NOW)))
    assert texts == ["c", "d", "e", "f"]
    assert (replay.first, replay.last, replay.gap) == (3, 6, False)
    # Live messages follow, numbered after the replay.
    assert talk(hub, 1, LOBBY, "g") == [7]


def test_a_client_already_in_the_room_can_catch_up_without_rejoining() -> None:
    hub: Hub[int] = Hub()
    register(hub, 1, "alice")
    talk(hub, 1, LOBBY, "a", "b", "c")
    epoch = hub._store.open_room("#lobby", LOBBY).epoch
    out = events_to(1, hub.receive(1, ev.Join(LOBBY, epoch, 1), NOW))
    assert not any(isinstance(e, ev.Joined) for e in out)
    assert replayed(out)[1] == ["b", "c"]


@pytest.mark.parametrize("trimmed", [True, False])
def test_what_cannot_be_resumed_is_a_gap_and_the_latest_instead(trimmed: bool) -> None:
    hub: Hub[int] = Hub(store=MemoryStore(history_limit=3), replay=2)
    register(hub, 1, "alice")
    talk(hub, 1, LOBBY, "a", "b", "c", "d", "e")  # 1 and 2 are trimmed away
    epoch = hub._store.open_room("#lobby", LOBBY).epoch
    register(hub, 2, "bob", resume=True)
    # Trimmed: it saw up to 1, but 2 is gone. Replaced: an epoch the room never had.
    join = ev.Join(LOBBY, epoch, 1) if trimmed else ev.Join(LOBBY, "0ld", 4)
    replay, texts = replayed(events_to(2, hub.receive(2, join, NOW)))
    assert replay.gap
    assert texts == ["d", "e"]


def test_an_emptied_room_forgets_its_history_in_memory_and_says_so_on_resume() -> None:
    hub: Hub[int] = Hub()
    register(hub, 1, "alice")
    hub.receive(1, ev.Join("#dev"), NOW)
    talk(hub, 1, "#dev", "a")
    epoch = hub._store.open_room("#dev", "#dev").epoch
    hub.receive(1, ev.Part("#dev", ""), NOW)
    replay, texts = replayed(events_to(1, hub.receive(1, ev.Join("#dev", epoch, 1), NOW)))
    assert replay.epoch != epoch and replay.gap and texts == []


def test_history_pages_back_from_a_seq() -> None:
    hub: Hub[int] = Hub(replay=0)
    register(hub, 1, "alice")
    talk(hub, 1, LOBBY, *"abcdefg")
    _, texts = replayed(events_to(1, hub.receive(1, ev.History(LOBBY, 0, 3), NOW)))
    assert texts == ["e", "f", "g"]
    replay, texts = replayed(events_to(1, hub.receive(1, ev.History(LOBBY, 5, 3), NOW)))
    assert texts == ["b", "c", "d"] and (replay.first, replay.last) == (2, 4)
    replay, texts = replayed(events_to(1, hub.receive(1, ev.History(LOBBY, 1, 3), NOW)))
    assert texts == [] and replay.first > replay.last
    assert events_to(1, hub.receive(1, ev.History("#elsewhere", 0, 3), NOW))[0] == ev.Error(
        ErrorCode.NOT_IN_ROOM, "you are not in #elsewhere; /join #elsewhere first"
    )


def test_a_kept_room_keeps_its_topic_and_history_for_the_next_hub() -> None:
    store = MemoryStore(keep_rooms=True)
    hub: Hub[int] = Hub(store=store)
    register(hub, 1, "alice")
    hub.receive(1, ev.Join("#dev"), NOW)
    hub.receive(1, ev.SetTopic("#dev", "ship it"), NOW)
    talk(hub, 1, "#dev", "remember me")
    hub.receive(1, ev.Part("#dev", ""), NOW)
    assert "#dev" in hub.room_names()  # empty, but it has a past
    restarted: Hub[int] = Hub(store=store)
    assert "#dev" in restarted.room_names()
    register(restarted, 1, "alice")
    out = events_to(1, restarted.receive(1, ev.Join("#dev"), NOW))
    assert ev.Topic("#dev", "ship it", "alice", int(NOW), False) in out
    assert replayed(out)[1] == ["remember me"]


# --- accounts ----------------------------------------------------------------------


def _registered(hub: Hub[int], verifier: str = "v1") -> None:
    """alice registers her nick with verifier ``verifier``, then leaves."""
    register(hub, 1, "alice")
    vetted = Vetted(ev.RegisterAccount("pw"), "", False, verifier)
    assert isinstance(events_to(1, hub.receive(1, vetted, NOW))[0], ev.Reply)
    hub.receive(1, ev.Goodbye("later"), NOW)


def test_a_registered_nick_needs_its_password_and_a_wrong_one_may_be_retried() -> None:
    hub: Hub[int] = Hub()
    _registered(hub)
    hub.connect(2)
    (refusal,) = events_to(2, hub.receive(2, ev.Register("Alice"), NOW))
    assert isinstance(refusal, ev.Error) and refusal.code is ErrorCode.NEEDS_PASSWORD
    assert 2 in hub  # a framed client may give the password on the same connection
    wrong = Vetted(ev.Register("alice", "nope"), "v1", False)
    assert events_to(2, hub.receive(2, wrong, NOW))[0] == ev.Error(ErrorCode.BAD_PASSWORD, "wrong password for alice")
    throttled = Vetted(ev.Register("alice", "guess"), "v1", False, wait=11.5)
    (refusal,) = events_to(2, hub.receive(2, throttled, NOW))
    assert isinstance(refusal, ev.Error) and refusal.code is ErrorCode.TOO_MANY_TRIES
    right = Vetted(ev.Register("alice", "pw"), "v1", True)
    assert events_to(2, hub.receive(2, right, NOW))[0] == ev.Welcome("alice", 1)


def test_a_verdict_on_a_verifier_that_changed_meanwhile_is_not_trusted() -> None:
    hub: Hub[int] = Hub()
    _registered(hub, "v2")
    hub.connect(2)
    stale = Vetted(ev.Register("alice", "pw"), "v1", True)
    (refusal,) = events_to(2, hub.receive(2, stale, NOW))
    assert isinstance(refusal, ev.Error) and "try again" in refusal.detail


def test_an_unvetted_password_is_not_taken_on_trust() -> None:
    hub: Hub[int] = Hub()
    _registered(hub)
    hub.connect(2)
    (refusal,) = events_to(2, hub.receive(2, ev.Register("alice", "pw"), NOW))
    assert isinstance(refusal, ev.Error) and refusal.code is ErrorCode.NEEDS_PASSWORD
    register(hub, 3, "bob")
    (refusal,) = events_to(3, hub.receive(3, ev.RegisterAccount("pw"), NOW))
    assert isinstance(refusal, ev.Error) and refusal.code is ErrorCode.UNEXPECTED_FRAME


def test_password_change_and_unregistering_take_the_old_password() -> None:
    hub: Hub[int] = Hub()
    _registered(hub)
    hub.connect(1)
    hub.receive(1, Vetted(ev.Register("alice", "pw"), "v1", True), NOW)
    wrong = Vetted(ev.ChangePassword("no", "new"), "v1", False, "v9")
    assert events_to(1, hub.receive(1, wrong, NOW))[0] == ev.Error(ErrorCode.BAD_PASSWORD, "wrong password for alice")
    changed = Vetted(ev.ChangePassword("pw", "new"), "v1", True, "v2")
    assert isinstance(events_to(1, hub.receive(1, changed, NOW))[0], ev.Reply)
    assert hub.verifier_for(1, ev.DropAccount("x")) == "v2"
    again = Vetted(ev.RegisterAccount("other"), "v2", False, "v3")
    assert events_to(1, hub.receive(1, again, NOW))[0] == ev.Error(
        ErrorCode.ACCOUNT_EXISTS, "alice is registered already"
    )
    dropped = Vetted(ev.DropAccount("new"), "v2", True)
    assert isinstance(events_to(1, hub.receive(1, dropped, NOW))[0], ev.Reply)
    assert hub.verifier_for(1, ev.DropAccount("x")) == ""
    (refusal,) = events_to(1, hub.receive(1, Vetted(ev.DropAccount("new"), "", False), NOW))
    assert isinstance(refusal, ev.Error) and refusal.code is ErrorCode.NO_ACCOUNT


def test_nobody_renames_into_a_registered_nick() -> None:
    hub: Hub[int] = Hub()
    _registered(hub)
    register(hub, 2, "bob")
    (refusal,) = events_to(2, hub.receive(2, ev.ChangeNick("ALICE"), NOW))
    assert isinstance(refusal, ev.Error) and refusal.code is ErrorCode.NEEDS_PASSWORD


def test_private_messages_to_an_offline_account_wait_for_its_login() -> None:
    hub: Hub[int] = Hub()
    _registered(hub)
    register(hub, 2, "bob")
    (answer,) = events_to(2, hub.receive(2, ev.Whisper("alice", "call me"), NOW))
    assert isinstance(answer, ev.Reply) and "offline" in answer.text
    (refusal,) = events_to(2, hub.receive(2, ev.Whisper("nobody", "hello?"), NOW))
    assert isinstance(refusal, ev.Error) and refusal.code is ErrorCode.NO_SUCH_NICK
    hub.connect(3)
    out = events_to(3, hub.receive(3, Vetted(ev.Register("alice", "pw"), "v1", True), NOW + 60))
    assert out[:2] == [ev.Welcome("alice", 2), ev.Private("bob", "call me", T, True)]
    # Delivered once: the next login finds none.
    hub.receive(3, ev.Goodbye(""), NOW)
    hub.connect(4)
    out = events_to(4, hub.receive(4, Vetted(ev.Register("alice", "pw"), "v1", True), NOW))
    assert not any(isinstance(e, ev.Private) for e in out)


def test_an_account_is_never_saved_without_a_verifier() -> None:
    hub: Hub[int] = Hub()
    register(hub, 1, "alice")
    (refusal,) = events_to(1, hub.receive(1, Vetted(ev.RegisterAccount("pw"), "", False, ""), NOW))
    assert isinstance(refusal, ev.Error) and refusal.code is ErrorCode.BAD_PASSWORD
    assert hub.verifier_for(1, ev.DropAccount("x")) == ""

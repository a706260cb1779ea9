"""The rooms scenario: the room-aware plan, the join bookkeeping, and small runs
against the real servers in which every message stays in its room.

Figures are printed, never asserted: these tests check what was delivered to
whom, and that nothing is left running.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bench import runner
from bench.accounting import Ledger
from bench.load import Outcome, Peer, Plan
from bench.payload import (
    MESSAGE_PREFIX,
    MESSAGE_SIZE,
    SAY_PREFIX,
    make_text,
    nick_of,
    parse_text,
    room_name,
    say_frame,
    say_prefix,
)
from bench.runner import Placement, account, run_once
from bench.scenarios import FULL, QUICK, TRANSPORTS, Scenario
from common.chat import events as ev
from common.chat.rooms import LOBBY, check_room
from common.wire.framing import HEADER_SIZE, decode_frame, encode
from tests.bench.children import our_children

# --- the plan ------------------------------------------------------------------


def rooms_plan(clients: int = 12, rooms: int = 3, senders: tuple[int, ...] = (0, 1, 2, 6, 7, 8)) -> Plan:
    return Plan(clients=clients, senders=senders, messages=40, rate=100, rooms=rooms)


def test_a_client_is_in_room_index_mod_rooms() -> None:
    plan = rooms_plan()
    assert [plan.room_of(i) for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert list(plan.members(1)) == [1, 4, 7, 10]
    assert sorted(i for r in range(3) for i in plan.members(r)) == list(range(12))


def test_a_receiver_expects_only_the_senders_of_its_own_room() -> None:
    plan = rooms_plan()
    assert plan.expected_from(3) == {0: 40, 6: 40}  # room 0: members 0, 3, 6, 9
    assert plan.expected_from(3).own is None  # it does not send: no echo
    assert plan.expected_from(0) == {6: 40}  # not itself among the others...
    assert (plan.expected_from(0).own, plan.expected_from(0).echoes) == (0, 40)  # ...but its echoes
    assert plan.expected_from(11) == {2: 40, 8: 40}  # room 2
    for receiver in range(plan.clients):
        assert all(plan.room_of(s) == plan.room_of(receiver) for s in plan.expected_from(receiver))


def test_a_senders_audience_is_its_room_but_itself() -> None:
    plan = rooms_plan()
    assert plan.audience(0) == (3, 6, 9)
    assert plan.audience(8) == (2, 5, 11)
    # Every expected delivery is in exactly one audience, and the other way round.
    pairs = {(s, r) for s in plan.senders for r in plan.audience(s)}
    assert pairs == {(s, r) for r in range(plan.clients) for s in plan.expected_from(r)}


def test_without_rooms_everyone_shares_the_lobby() -> None:
    plan = Plan(clients=5, senders=(0, 2), messages=10, window=4, stuck=(4,))
    assert plan.room_of(3) is None
    assert plan.expected_from(2) == {0: 10}
    assert plan.expected_from(3) == {0: 10, 2: 10}
    assert plan.audience(0) == (1, 2, 3)  # not the stuck client


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"rooms": 13}, "rooms"),
        ({"rooms": -1}, "rooms"),
        ({"stuck": (11,), "senders": (0,)}, "stuck"),
    ],
)
def test_a_plan_refuses_rooms_it_cannot_run(change: dict[str, Any], why: str) -> None:
    args: dict[str, Any] = {"clients": 12, "senders": (0, 1), "messages": 5, "rate": 10, "rooms": 3, **change}
    with pytest.raises(ValueError, match=why):
        Plan(**args)


def test_the_scenario_puts_the_same_number_of_senders_in_every_room() -> None:
    two_each = Scenario("rooms", 12, 6, 40, rate=100, rooms=3).plan(quiet_s=1.0)
    assert two_each.senders == (0, 1, 2, 6, 7, 8)  # spread over each room's members
    one_each = Scenario("rooms", 1000, 50, 500, rate=50, rooms=50).plan(quiet_s=1.0)
    assert one_each.senders == tuple(range(50))
    with pytest.raises(ValueError, match="evenly"):
        Scenario("rooms", 12, 4, 40, rate=100, rooms=3).plan(quiet_s=1.0)


@pytest.mark.parametrize("table", [FULL, QUICK], ids=["full", "quick"])
def test_the_rooms_scenario_has_busy_rooms_of_twenty(table: tuple[Scenario, ...]) -> None:
    (scenario,) = [s for s in table if s.name == "rooms"]
    plan = scenario.plan(quiet_s=3.0)
    assert scenario.only == ("tcp", "udp")
    assert plan.rate is not None and not plan.stuck
    for room in range(plan.rooms):
        assert len(plan.members(room)) == 20
        assert sum(plan.room_of(s) == room for s in plan.senders) == 1
    if table is FULL:
        assert (plan.clients, plan.rooms) == (1000, 50)


def test_the_other_scenarios_stay_in_the_lobby() -> None:
    for scenario in (*FULL, *QUICK):
        if scenario.name != "rooms":
            assert scenario.rooms == 0
            assert scenario.plan(quiet_s=1.0).rooms == 0


# --- fixed frame sizes -----------------------------------------------------------


def test_every_benchmark_room_keeps_the_relayed_message_size() -> None:
    for index in (0, 49, 9999):
        room = room_name(index)
        assert check_room(room) == room and len(room) == len(LOBBY)
        relayed = encode(ev.Message(room, nick_of(index), make_text(index, 1, 0).decode("ascii")))
        assert len(relayed) == MESSAGE_SIZE
        assert relayed.startswith(MESSAGE_PREFIX)
    with pytest.raises(ValueError):
        room_name(10_000)


def test_a_rooms_say_frame_is_the_encoders_frame() -> None:
    prefix = say_prefix("#r0007")
    frame = say_frame(7, 3, 1234, prefix)
    assert decode_frame(frame) == ev.Say("#r0007", make_text(7, 3, 1234).decode("ascii"))
    assert say_frame(7, 3, 1234) == say_frame(7, 3, 1234, SAY_PREFIX)
    assert decode_frame(say_frame(7, 3, 1234)) == ev.Say(LOBBY, make_text(7, 3, 1234).decode("ascii"))
    with pytest.raises(ValueError, match="#lobby"):
        say_prefix("#r00007")


def test_a_message_from_another_room_is_a_stray_not_a_missing_one() -> None:
    plan = rooms_plan()
    ledger = Ledger(plan.expected_from(3))  # room 0: senders 0 and 6
    assert ledger.expected == 80

    def message(sender: int, seq: int) -> bytes:
        room = room_name(plan.room_of(sender) or 0)
        text = make_text(sender, seq, 10).decode("ascii")
        return encode(ev.Message(room, nick_of(sender), text, seq=seq, time=1))

    ledger.feed(20, b"".join([message(0, 1), message(6, 1), message(1, 1), message(0, 2)]))
    assert (ledger.unique, ledger.duplicates, ledger.strays, ledger.garbled) == (3, 0, 1, 1)
    # A sender's own message back is its echo: neither a delivery nor a stray.
    sender = Ledger(plan.expected_from(0))  # room 0: the other sender is 6
    sender.feed(20, b"".join([message(0, 1), message(6, 1), message(1, 1)]))
    assert (sender.unique, sender.echoes, sender.strays, sender.garbled) == (1, 1, 1, 1)


# --- the join bookkeeping ----------------------------------------------------------


class _Quiet(Peer):
    """A peer with no socket: it records what it would send."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def test_a_peer_counts_its_rooms_joins_and_its_own_part_from_the_lobby() -> None:
    peer = _Quiet(4)
    peer.enter_room("#r0001")
    assert [decode_frame(f) for f in _frames(b"".join(peer.sent))] == [ev.Join("#r0001"), ev.Part(LOBBY, "")]
    notices = [
        ev.Joined("#r0001", nick_of(4)),
        ev.Joined("#r0002", nick_of(5)),  # another room
        ev.Joined(LOBBY, nick_of(6)),
        ev.Parted(LOBBY, nick_of(7), ""),  # someone else leaving the lobby
        ev.Joined("#r0001", nick_of(7)),
    ]
    peer.deliver(1, b"".join(encode(n) for n in notices), 1)
    assert (peer.room_joins, peer.left_lobby) == (2, False)
    peer.deliver(2, encode(ev.Parted(LOBBY, nick_of(4), "")), 2)
    assert peer.left_lobby


def _frames(data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        end = pos + HEADER_SIZE + int.from_bytes(data[pos + 4 : pos + 8], "big")
        out.append(data[pos:end])
        pos = end
    return out


# --- against the real servers ------------------------------------------------------


def _capture_accounting(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Plan, Outcome]]:
    """Keep the plan and raw outcome the runner accounts for."""
    seen: list[tuple[Plan, Outcome]] = []
    account: Callable[[Plan, Outcome], tuple[list[Ledger], int]] = runner.account

    def spy(plan: Plan, outcome: Outcome) -> tuple[list[Ledger], int]:
        seen.append((plan, outcome))
        return account(plan, outcome)

    monkeypatch.setattr(runner, "account", spy)
    return seen


def _relayed_rooms(chunks: list[tuple[int, bytes]]) -> list[tuple[str, int]]:
    """``(room, sender)`` of every message in a receiver's stream, which holds
    nothing else (no join or part notice was still in flight when it began)."""
    out = []
    for frame in _frames(b"".join(data for _, data in chunks)):
        event = decode_frame(frame)
        assert isinstance(event, ev.Message), event
        fields = parse_text(event.text.encode("ascii"))
        assert fields is not None
        out.append((event.room, fields[0]))
    return out


@pytest.mark.timeout(30)
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_a_small_rooms_run_delivers_everything_once_and_only_within_rooms(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _capture_accounting(monkeypatch)
    small = Scenario("rooms", clients=12, senders=6, messages=40, rate=100, rooms=3, deadline_s=10)
    result = run_once(small, TRANSPORTS[transport], 1, placement=Placement(None, None), seed=1)
    print(result)
    assert result.completed
    # 3 rooms of 4, 2 senders in each: every message to the 3 other members.
    assert (result.sent, result.expected, result.delivered) == (240, 720, 720)
    assert (result.duplicates, result.out_of_order, result.garbled) == (0, 0, 0)
    assert result.p99_ms is not None
    assert not [n for n in result.notes if "room" in n], result.notes
    (plan, outcome) = seen[0]
    assert sorted(outcome.received) == list(range(12))
    for receiver, chunks in outcome.received.items():
        room = plan.room_of(receiver)
        assert room is not None
        relayed = _relayed_rooms(chunks)
        assert {name for name, _ in relayed} == {room_name(room)}
        senders = sorted(sender for _, sender in relayed)
        # Every member's messages once, a sender's own echoed back to it.
        expected = plan.expected_from(receiver)
        echoes = [expected.own] * expected.echoes if expected.own is not None else []
        assert senders == sorted([*(s for s, count in expected.items() for _ in range(count)), *echoes])
    # The echoes are counted apart from the deliveries: each sender has all its own back.
    ledgers, _ = account(plan, outcome)
    assert sum(ledger.echoes for ledger in ledgers) == 240
    assert sum(ledger.strays for ledger in ledgers) == 0
    assert our_children() == []

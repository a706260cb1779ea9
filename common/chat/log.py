"""The in-memory store and nick table: what ``--ephemeral`` keeps, behind the ports.

``MemoryStore`` keeps rooms, the last ``history_limit`` entries of each,
accounts and kept private messages in dicts, for as long as the process
lives; it stages nothing (``detach`` is always None), so deliveries are never
held back. It is also the model the SQLite store is tested against.
``MemoryNicks`` is a dict. Both run under the hub's lock.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

from common.chat.rooms import LOBBY, room_key
from common.ports import Account, Entry, Kept, RoomRecord
from common.wire.limits import MAX_KEPT

C = TypeVar("C", bound=Hashable)

#: Entries kept per room unless told otherwise (``--history-limit``).
DEFAULT_HISTORY_LIMIT: Final = 10_000


#: The lobby's key: the room everyone starts in.
_LOBBY_KEY: Final = room_key(LOBBY)


def outlives_members(key: str, *, history: bool, topic: str) -> bool:
    """Whether a store that keeps rooms keeps this one once it is empty: with
    history or a topic, and the lobby always (it is where everyone lands, so
    its epoch must not change under the clients that resume it, whatever was
    said there: an empty lobby made anew would tell every client coming back
    after a restart that it lost messages it never missed)."""
    return history or bool(topic) or key == _LOBBY_KEY


def new_epoch() -> str:
    """A fresh epoch name: short, and never the same twice in practice."""
    return secrets.token_hex(4)


class _Room:
    __slots__ = ("entries", "epoch", "last", "name", "topic", "topic_at", "topic_by")

    def __init__(self, name: str, epoch: str, limit: int) -> None:
        self.name = name
        self.epoch = epoch
        self.last = 0
        self.entries: deque[Entry] = deque(maxlen=limit)
        self.topic = ""
        self.topic_by = ""
        self.topic_at = 0

    def record(self) -> RoomRecord:
        first = self.entries[0].seq if self.entries else self.last + 1
        return RoomRecord(self.name, self.epoch, first, self.last, self.topic, self.topic_by, self.topic_at)


class MemoryStore:
    """Everything in memory (``common.ports.Store``).

    Args:
        history_limit: entries kept per room; older ones are dropped.
        keep_rooms: whether an emptied room with history or a topic is kept
            (a store that outlives its members); False forgets every room
            when its last member leaves, as twinchat did before it had a store.
    """

    def __init__(self, history_limit: int = DEFAULT_HISTORY_LIMIT, *, keep_rooms: bool = False) -> None:
        self.history_limit = history_limit
        self.keep_rooms = keep_rooms
        self._rooms: dict[str, _Room] = {}
        self._accounts: dict[str, Account] = {}
        self._kept: dict[str, list[Kept]] = {}

    def rooms(self) -> list[RoomRecord]:
        return [room.record() for room in self._rooms.values()]

    def open_room(self, key: str, name: str) -> RoomRecord:
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = _Room(name, new_epoch(), self.history_limit)
        return room.record()

    def close_room(self, key: str) -> bool:
        room = self._rooms.get(key)
        if room is None:
            return False
        if self.keep_rooms and outlives_members(key, history=bool(room.entries), topic=room.topic):
            return True
        del self._rooms[key]
        return False

    def append(self, key: str, time: int, sender: str, text: str, action: bool) -> int:
        room = self._rooms[key]
        room.last += 1
        room.entries.append(Entry(room.last, time, sender, text, action))
        return room.last

    def after(self, key: str, seq: int, limit: int) -> list[Entry]:
        room = self._rooms.get(key)
        if room is None or not room.entries or limit <= 0:
            return []
        # Entries are numbered without gaps, so an index is a subtraction.
        start = max(0, seq + 1 - room.entries[0].seq)
        return [room.entries[i] for i in range(start, min(len(room.entries), start + limit))]

    def before(self, key: str, seq: int, limit: int) -> list[Entry]:
        room = self._rooms.get(key)
        if room is None or not room.entries or limit <= 0:
            return []
        stop = len(room.entries) if seq <= 0 else max(0, min(len(room.entries), seq - room.entries[0].seq))
        return [room.entries[i] for i in range(max(0, stop - limit), stop)]

    def set_topic(self, key: str, text: str, by: str, at: int) -> None:
        room = self._rooms[key]
        room.topic, room.topic_by, room.topic_at = text, by, at

    def account(self, key: str) -> Account | None:
        return self._accounts.get(key)

    def save_account(self, account: Account) -> None:
        self._accounts[account.key] = account

    def drop_account(self, key: str) -> None:
        self._accounts.pop(key, None)
        self._kept.pop(key, None)

    def keep_private(self, key: str, kept: Kept) -> bool:
        box = self._kept.setdefault(key, [])
        if len(box) >= MAX_KEPT:
            return False
        box.append(kept)
        return True

    def take_privates(self, key: str) -> list[Kept]:
        return self._kept.pop(key, [])

    def dirty(self) -> bool:
        return False

    def detach(self) -> object | None:
        return None

    def write(self, batch: object) -> None:
        pass

    def close(self) -> None:
        pass


class MemoryNicks(Generic[C]):
    """Nick ownership in a dict (``NickOwners``)."""

    def __init__(self) -> None:
        self._owners: dict[str, C] = {}

    def claim(self, key: str, owner: C, nick: str = "") -> bool:
        return self._owners.setdefault(key, owner) is owner

    def release(self, key: str, owner: C) -> None:
        if self._owners.get(key) is owner:
            del self._owners[key]

    def owner(self, key: str) -> C | None:
        return self._owners.get(key)

"""The in-memory fact log and nick table: today's behaviour behind the ports.

``MemoryLog`` numbers each room's facts and keeps none of them (history is a
store's job); ``MemoryNicks`` is a dict. Both run under the hub's lock.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from common.chat import events as ev
from common.ports import Fact

C = TypeVar("C", bound=Hashable)


class MemoryLog:
    """Numbers facts per room from 1; keeps only the counts (``FactLog``)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def append(self, room_key: str, room: str, time: float, event: ev.ServerEvent) -> Fact:
        seq = self._last[room_key] = self._last.get(room_key, 0) + 1
        return Fact(room, seq, time, event)

    def forget(self, room_key: str) -> None:
        self._last.pop(room_key, None)


class MemoryNicks(Generic[C]):
    """Nick ownership in a dict (``NickOwners``)."""

    def __init__(self) -> None:
        self._owners: dict[str, C] = {}

    def claim(self, key: str, owner: C) -> bool:
        return self._owners.setdefault(key, owner) is owner

    def release(self, key: str, owner: C) -> None:
        if self._owners.get(key) is owner:
            del self._owners[key]

    def owner(self, key: str) -> C | None:
        return self._owners.get(key)

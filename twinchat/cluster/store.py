"""The store of a server that is one of many on one Redis.

``ClusterStore`` is ``twinchat.store.redis.RedisStore`` (accounts and kept
private messages, written by the server's writer thread as there) with the
rooms taken out of its hands: a room's numbering, history and topic are
written by the bus's scripts (``twinchat.cluster.scripts.POST``), in the one
order every server sees, so here a room is read from Redis each time it is
opened (one short round trip when someone joins or resumes), never kept or
trimmed or forgotten on this server's say: other servers' members may be in it.
"""

from __future__ import annotations

from common.chat.log import DEFAULT_HISTORY_LIMIT, new_epoch
from common.ports import Entry, RoomRecord, StoreFault
from twinchat.cluster.node import DEFAULT_HEARTBEAT, FAILURES, Cluster
from twinchat.store.redis import DEFAULT_PREFIX, RedisStore, _entries, _one_line


class ClusterStore(RedisStore):
    """The Redis store of one server among many; ``cluster`` is its link to the others.

    Args:
        url, history_limit, prefix: as ``RedisStore``'s.
        heartbeat: as ``Cluster``'s.

    Raises:
        StoreFault: Redis cannot be reached or used at start.
    """

    def __init__(
        self,
        url: str,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        *,
        prefix: str = DEFAULT_PREFIX,
        heartbeat: float = DEFAULT_HEARTBEAT,
    ) -> None:
        super().__init__(url, history_limit, prefix=prefix)
        try:
            self.cluster = Cluster(url, history_limit, prefix=prefix, heartbeat=heartbeat)
        except FAILURES as exc:
            self._release()
            raise StoreFault(f"store {self.where}: cannot join the chat on Redis ({_one_line(exc)})") from None
        #: The last row read of each room opened, for when Redis does not answer.
        self._known: dict[str, RoomRecord] = {}

    def _load(self) -> None:
        self._load_accounts()  # rooms are read when opened, not loaded

    def open_room(self, key: str, name: str) -> RoomRecord:
        row = self.cluster.open_room(key, name, new_epoch())
        if row is None:  # Redis does not answer: what was known (the bus is down; new events are refused)
            return self._known.get(key) or RoomRecord(name, new_epoch(), 1, 0, "", "", 0)
        name, epoch, first, last, topic, topic_by, topic_at = row
        record = RoomRecord(name, epoch, int(first), int(last), topic, topic_by, int(topic_at))
        self._known[key] = record
        return record

    def close_room(self, key: str) -> bool:
        self._known.pop(key, None)
        return False  # forgotten here; Redis keeps it for the others

    def append(self, key: str, time: int, sender: str, text: str, action: bool) -> int:
        raise RuntimeError("a server of many numbers messages through the bus, not the store")

    def set_topic(self, key: str, text: str, by: str, at: int) -> None:
        raise RuntimeError("a server of many sets topics through the bus, not the store")

    def after(self, key: str, seq: int, limit: int) -> list[Entry]:
        if limit <= 0:
            return []
        name = self._log_key(key)
        found: list[Entry] = self._read(lambda db: _entries(db.xrange(name, f"{seq + 1}-0", "+", count=limit)), [])
        return found

    def before(self, key: str, seq: int, limit: int) -> list[Entry]:
        if limit <= 0 or seq == 1:
            return []
        name, top = self._log_key(key), "+" if seq <= 0 else f"{seq - 1}-0"
        found: list[Entry] = self._read(lambda db: _entries(db.xrevrange(name, top, "-", count=limit)), [])
        found.reverse()
        return found

    def close(self) -> None:
        self.cluster.close()
        super().close()

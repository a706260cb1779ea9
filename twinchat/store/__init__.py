"""The stores behind ``common.ports.Store``: SQLite by default, memory with ``--ephemeral``.

``open_store`` picks one from the server's ``--data-dir``: an empty one means
in memory (``common.chat.log.MemoryStore``: rooms forgotten when their last
member leaves, everything gone when the process ends); anything else is a
directory, made if missing, holding ``twinchat.sqlite3`` (``SqliteStore``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from common.chat.log import MemoryStore
from common.ports import Store, StoreFault
from twinchat.store.sqlite import SqliteStore

__all__ = ["DATABASE_NAME", "SqliteStore", "open_store"]

#: The database's name inside ``--data-dir``.
DATABASE_NAME: Final = "twinchat.sqlite3"


def open_store(data_dir: str, history_limit: int) -> Store:
    """The store for ``--data-dir``.

    Args:
        data_dir: ``''`` for an ephemeral store in memory; otherwise a
            directory (made, with its parents, if missing).
        history_limit: entries kept per room.

    Raises:
        StoreFault: the directory cannot be made, or the database cannot be
            opened (one line naming the path and what to do).
    """
    if not data_dir:
        return MemoryStore(history_limit)
    directory = Path(data_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreFault(
            f"store: cannot make the data directory {directory} ({exc.strerror or exc}); "
            "choose another --data-dir, or --ephemeral to keep nothing"
        ) from None
    return SqliteStore(directory / DATABASE_NAME, history_limit)

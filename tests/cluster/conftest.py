"""Many servers on one real Redis: the Redis fixtures of the store tests, and
in-process servers (TCP and UDP in one process each) on port 0."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.store.conftest import own_redis, redis_server, redis_url  # noqa: F401 (fixtures)
from tests.tcp.conftest import FramedClient, clients  # noqa: F401 (a fixture: framed clients, closed after the test)
from twinchat.server import BothServer

WAIT = 20.0

#: Makes a server of the chat on a Redis URL; extra options go to ``BothServer``.
MakeServer = Callable[..., BothServer]

#: Opens a framed client, closed after the test (``tests.tcp.conftest.clients``).
MakeClient = Callable[..., FramedClient]


@pytest.fixture
def make_node() -> Iterator[MakeServer]:
    """Start in-process servers on 127.0.0.1:0 on one Redis; shut them down after the test."""
    started: list[tuple[BothServer, threading.Thread]] = []

    def make(url: str, **options: Any) -> BothServer:
        options.setdefault("rate_limit", 0)
        server = BothServer("127.0.0.1", 0, redis_url=url, **options)
        thread = threading.Thread(target=server.serve_forever, name="test server", daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield make
    for server, thread in started:
        server.shutdown()
        thread.join(WAIT)
        assert not thread.is_alive()

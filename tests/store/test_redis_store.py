"""RedisStore: restarts, the layout in Redis, Redis gone at start and mid-run, the server with --redis.

The model test (``test_store_model.py``) checks the answers; these check what
only a real Redis can get wrong. Every wait is bounded; nothing sleeps to wait.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from common.chat import events as ev
from common.ports import Account, Entry, Kept, StoreFault
from common.wire.limits import MAX_KEPT
from tests.processes import ServerProcess
from tests.redis_server import RedisServer
from tests.test_memory_e2e import Framed
from twinchat import servercli
from twinchat.store import redis as redis_store
from twinchat.store.redis import READ_TIMEOUT, RedisStore

ROOT = Path(__file__).resolve().parents[2]

#: Seconds any single wait may take (generous: the machine is shared).
WAIT = 20.0


def fill(store: RedisStore, key: str, count: int, *, start: int = 0) -> list[int]:
    store.open_room(key, key)
    return [store.append(key, start + i, "ann", f"message {start + i}", i % 2 == 1) for i in range(count)]


def flush(store: RedisStore) -> None:
    batch = store.detach()
    if batch is not None:
        store.write(batch)


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (held bound, not listening, meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def one_line(exc: pytest.ExceptionInfo[StoreFault]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


# -- restarts and the layout ------------------------------------------------------


def test_rooms_history_topics_accounts_and_kept_messages_survive_a_restart(redis_url: str) -> None:
    store = RedisStore(redis_url, 100)
    epoch = store.open_room("#a", "#A").epoch
    fill(store, "#a", 5)
    store.set_topic("#a", "news", "ann", 7)
    store.open_room("#b", "#B")
    store.set_topic("#b", "quiet", "bob", 8)
    store.save_account(Account("ann", "Ann", "v1", 3))
    assert store.keep_private("ann", Kept("bob", "psst", 9))
    flush(store)
    assert store.keep_private("ann", Kept("bob", "again", 10))  # staged only: close writes it
    store.close()

    store = RedisStore(redis_url, 100)
    records = {r.name: r for r in store.rooms()}
    assert records["#A"].epoch == epoch
    assert (records["#A"].first, records["#A"].last, records["#A"].topic) == (1, 5, "news")
    assert (records["#B"].first, records["#B"].last, records["#B"].topic) == (1, 0, "quiet")
    assert [e.text for e in store.after("#a", 0, 10)] == [f"message {i}" for i in range(5)]
    assert store.before("#a", 0, 2) == [Entry(4, 3, "ann", "message 3", True), Entry(5, 4, "ann", "message 4", False)]
    assert store.account("ann") == Account("ann", "Ann", "v1", 3)
    assert store.take_privates("ann") == [Kept("bob", "psst", 9), Kept("bob", "again", 10)]
    assert store.append("#a", 11, "ann", "six", False) == 6  # the numbering goes on
    store.close()


def test_a_restart_forgets_empty_rooms_and_a_smaller_limit_trims(redis_url: str) -> None:
    store = RedisStore(redis_url, 100)
    fill(store, "#a", 10)
    store.open_room("#empty", "#empty")
    store.close()

    store = RedisStore(redis_url, 3)
    (record,) = store.rooms()
    assert (record.name, record.first, record.last) == ("#a", 8, 10)
    assert [e.seq for e in store.after("#a", 0, 10)] == [8, 9, 10]
    db = redis.Redis.from_url(redis_url, decode_responses=True, protocol=2)
    assert db.xlen("twinchat:log:#a") == 3
    assert not db.exists("twinchat:room:#empty")
    assert db.smembers("twinchat:rooms") == {"#a"}
    db.close()
    store.close()


def test_the_layout_in_redis(redis_url: str) -> None:
    store = RedisStore(redis_url, 4, prefix="chat1:")
    fill(store, "#a", 6)
    store.set_topic("#a", "news", "ann", 7)
    store.save_account(Account("ann", "Ann", "v1", 3))
    store.keep_private("ann", Kept("bob", "psst", 9))
    flush(store)
    db = redis.Redis.from_url(redis_url, decode_responses=True, protocol=2)
    assert set(db.keys("*")) == {"chat1:rooms", "chat1:room:#a", "chat1:log:#a", "chat1:accounts",
                                 "chat1:account:ann", "chat1:kept:ann"}  # fmt: skip
    assert db.hgetall("chat1:room:#a")["first"] == "3"
    assert [ident for ident, _ in db.xrange("chat1:log:#a")] == ["3-0", "4-0", "5-0", "6-0"]
    assert db.hgetall("chat1:account:ann") == {"nick": "Ann", "verifier": "v1", "created": "3"}
    assert db.llen("chat1:kept:ann") == 1
    store.drop_account("ann")
    flush(store)
    assert not db.exists("chat1:account:ann") and not db.exists("chat1:kept:ann")
    db.close()
    store.close()


def test_a_batch_sent_twice_changes_nothing(redis_url: str) -> None:
    # As if an EXEC landed and its reply was lost: the batch is sent again.
    store = RedisStore(redis_url, 100)
    fill(store, "#a", 3)
    store.keep_private("ann", Kept("bob", "psst", 9))
    batch = store.detach()
    assert batch is not None
    store.write(batch)
    store._done = 0  # white box: the writer does not know it landed
    store.write(batch)
    fill(store, "#a", 1, start=3)
    flush(store)
    assert [e.seq for e in store.after("#a", 0, 10)] == [1, 2, 3, 4]
    assert store.take_privates("ann") == [Kept("bob", "psst", 9)]
    store.close()


def test_kept_boxes_are_bounded(redis_url: str) -> None:
    store = RedisStore(redis_url, 10)
    for i in range(MAX_KEPT):
        assert store.keep_private("ann", Kept("bob", f"m{i}", i))
        if i == MAX_KEPT // 2:
            flush(store)
    assert not store.keep_private("ann", Kept("bob", "one too many", 0))
    flush(store)
    assert not store.keep_private("ann", Kept("bob", "one too many", 0))
    assert [k.text for k in store.take_privates("ann")] == [f"m{i}" for i in range(MAX_KEPT)]
    assert store.take_privates("ann") == []
    store.close()


# -- Redis gone ---------------------------------------------------------------------


def test_no_redis_at_start_is_one_line_without_the_password() -> None:
    with socket_closed_port() as port, pytest.raises(StoreFault) as exc:
        RedisStore(f"redis://:hunter2@127.0.0.1:{port}/0", 10)
    text = one_line(exc)
    assert f"127.0.0.1:{port}" in text and "redis-server" in text and "hunter2" not in text
    with pytest.raises(StoreFault) as exc:
        RedisStore("http://127.0.0.1/", 10)
    assert "URL" in one_line(exc)


def test_redis_stopped_mid_run(own_redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore(own_redis.url, 100)
    fill(store, "#a", 3)
    store.save_account(Account("ann", "Ann", "v1", 3))
    flush(store)
    own_redis.stop(save=True)

    fill(store, "#a", 2, start=3)
    store.keep_private("ann", Kept("bob", "psst", 9))
    batch = store.detach()
    with pytest.raises(StoreFault) as exc:
        store.write(batch)
    assert "kept to retry" in one_line(exc)
    # Queries under the hub lock answer at once from memory, and say so once.
    caplog.set_level(logging.ERROR, "twinchat.store")
    started = time.monotonic()
    for _ in range(50):
        assert [e.seq for e in store.after("#a", 0, 10)] == [4, 5]  # what is staged
        assert store.account("ann") == Account("ann", "Ann", "v1", 3)  # never "not registered"
        assert store.account("nobody") is None
    assert time.monotonic() - started < READ_TIMEOUT + 1.0
    assert len([r for r in caplog.records if "reads failed" in r.getMessage()]) == 1

    own_redis.start()
    fill(store, "#a", 1, start=5)
    flush(store)  # the failed batch first, then this one
    store.close()
    store = RedisStore(own_redis.url, 100)
    assert [e.seq for e in store.after("#a", 0, 10)] == [1, 2, 3, 4, 5, 6]
    assert store.take_privates("ann") == [Kept("bob", "psst", 9)]
    store.close()


def test_reads_come_back_when_redis_does(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "READ_PAUSE", 0.0)  # ask Redis again at every query
    store = RedisStore(own_redis.url, 100)
    fill(store, "#a", 3)
    flush(store)
    store.detach()  # settled: the entries are read from Redis now
    own_redis.stop(save=True)
    caplog.set_level(logging.WARNING, "twinchat.store")
    assert store.after("#a", 0, 10) == []  # nothing staged, Redis gone: less, never wrong
    own_redis.start()
    assert [e.seq for e in store.after("#a", 0, 10)] == [1, 2, 3]
    fill(store, "#a", 1, start=3)
    flush(store)  # the writer's connection died with the old Redis: a new one, no fault
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "reads failed" in m] and [m for m in messages if "answered again" in m]
    store.close()


def test_a_redis_that_hangs_costs_one_short_wait_and_a_late_transaction_is_harmless(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_store, "WRITE_TIMEOUT", 0.3)
    store = RedisStore(own_redis.url, 100)
    fill(store, "#a", 2)
    store.keep_private("ann", Kept("bob", "psst", 9))
    flush(store)
    store.detach()
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)  # a host that answers nothing
    try:
        caplog.set_level(logging.ERROR, "twinchat.store")
        started = time.monotonic()
        assert store.after("#a", 0, 10) == []  # one timeout ...
        assert store.after("#a", 0, 10) == []  # ... then memory, at once
        assert time.monotonic() - started < READ_TIMEOUT + 0.5
        fill(store, "#a", 1, start=2)
        store.keep_private("ann", Kept("bob", "again", 10))
        batch = store.detach()
        with pytest.raises(StoreFault, match="kept to retry"):
            store.write(batch)  # unanswered (whether Redis runs what it got once it wakes or not)
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    fill(store, "#a", 1, start=3)
    flush(store)  # the kept batch again (harmless if Redis ran it), then this one
    store.close()
    store = RedisStore(own_redis.url, 100)
    assert [e.text for e in store.after("#a", 0, 10)] == [f"message {i}" for i in range(4)]
    assert [k.text for k in store.take_privates("ann")] == ["psst", "again"]
    store.close()


def test_the_retry_backlog_is_bounded_and_says_what_it_lost(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore(own_redis.url, 1000)
    store.backlog_limit = 10
    store.open_room("#a", "#a")
    flush(store)
    own_redis.stop()
    caplog.set_level(logging.ERROR, "twinchat.store")
    for i in range(3):
        fill(store, "#a", 8, start=8 * i)
        with pytest.raises(StoreFault):
            store.write(store.detach())
    assert any("they are lost" in r.getMessage() for r in caplog.records)
    assert sum(len(b) for b in store._backlog) <= 10
    with pytest.raises(StoreFault):
        store.close()  # the last write fails too, and says so in one line


def test_a_write_after_close_is_a_fault(redis_url: str) -> None:
    store = RedisStore(redis_url, 10)
    fill(store, "#a", 1)
    batch = store.detach()
    store.close()
    assert batch is not None
    store.write(batch)  # close() wrote it already: nothing to do
    store.append("#a", 1, "ann", "too late", False)
    late = store.detach()
    assert late is not None
    with pytest.raises(StoreFault, match="closed"):
        store.write(late)
    store.close()  # idempotent


# -- the server ---------------------------------------------------------------------


def test_a_server_with_redis_keeps_history_across_a_restart(
    redis_url: str, tmp_path: Path, server_processes: list[ServerProcess]
) -> None:
    first = ServerProcess("twinchat.server", "--data-dir", str(tmp_path / "unused"), "--redis", redis_url)
    server_processes.append(first)
    alice = Framed(first.address)
    alice.send(ev.Register("alice"))
    alice.until(ev.Replay)
    alice.send(ev.Join("#dev"), ev.SetTopic("#dev", "ship it"), ev.Say("#dev", "one"), ev.Say("#dev", "two"))
    alice.until(ev.Message, text="two")
    alice.close()
    code, err = first.stop(signal.SIGINT)
    assert code == 0, err
    assert "Traceback" not in err
    assert not (tmp_path / "unused").exists()  # no SQLite beside Redis

    second = ServerProcess("twinchat.server", "--data-dir", str(tmp_path / "unused"), "--redis", redis_url)
    server_processes.append(second)
    bob = Framed(second.address)
    bob.send(ev.Register("bob"))
    bob.until(ev.Replay)
    bob.send(ev.Join("#dev"))
    assert bob.until(ev.Topic).text == "ship it"  # type: ignore[attr-defined]
    replay = bob.until(ev.Replay)
    assert (replay.first, replay.last) == (1, 2)  # type: ignore[attr-defined]
    assert [bob.until(ev.Message).text for _ in range(2)] == ["one", "two"]  # type: ignore[attr-defined]
    bob.close()
    second.stop()


def test_a_server_without_redis_refuses_to_start_in_one_line() -> None:
    with socket_closed_port() as port:
        proc = subprocess.run(
            [sys.executable, "-m", "twinchat.server", "--port", "0", "--redis", f"redis://127.0.0.1:{port}/0"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
            cwd=ROOT,
        )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "cannot use Redis" in proc.stderr, proc.stderr


def test_the_servers_import_no_redis_without_the_flag() -> None:
    code = (
        "import sys, twinchat.server, tcpchat.server, udpchat.server\n"
        "from twinchat import servercli\n"
        "servercli.open_store('', 10).close()\n"
        "assert not [m for m in sys.modules if m == 'redis' or m.startswith('redis.')], 'redis imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=WAIT)


def test_the_flag_reaches_the_servers() -> None:
    args = servercli.parser("x", "x", _DEFAULTS).parse_args(["--redis", "redis://h:1/2"])
    assert servercli.options(args)["redis_url"] == "redis://h:1/2"
    assert servercli.options(servercli.parser("x", "x", _DEFAULTS).parse_args([]))["redis_url"] == ""


_DEFAULTS = servercli.Defaults(
    port=0, max_clients=1, idle_timeout=1.0, idle_help="", register_timeout=1.0, max_queue=1, max_queue_help=""
)


def test_no_redis_server_binary_fails_the_tests_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="apt-get install redis-server"):
        RedisServer(tmp_path)

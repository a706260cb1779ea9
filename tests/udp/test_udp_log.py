"""What the UDP server logs: one line per session event, and a readable
summary at shutdown (issue 13 item 11)."""

from __future__ import annotations

import logging

import pytest

from common.chat import events as ev
from common.wire.framing import encode
from udpchat.server import ChatServer

from .harness import Member, raw_session


def test_departures_and_the_shutdown_summary_are_readable_lines(caplog: pytest.LogCaptureFixture) -> None:
    # Before: the UDP server logged no departures at all, and shut down with a
    # raw dict: "shut down; {'retransmitted segments': 2}".
    caplog.set_level(logging.INFO)
    srv = ChatServer("127.0.0.1", 0, rate_limit=0)
    srv.start()
    deaf, token = raw_session(srv.address)
    try:
        ann = Member(srv.address, "ann")
        assert ann.wait_for(lambda m: m.has(ev.Welcome))
        addr = f"127.0.0.1:{ann.link._sock.getsockname()[1]}"
        ann.link.close("off to lunch")
        # A session that never acknowledges: its goodbye goes unanswered.
        deaf.sendto(encode(ev.Session(token)) + encode(ev.Data(0, 0, encode(ev.Register("deaf")))), srv.address)
        assert ann.closed is not None
    finally:
        srv.shutdown()
        deaf.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if line.startswith(f"{addr} ")] == [
        f"{addr} connected",
        f"{addr} registered as ann",
        f"{addr} (ann) left (reason: quit 'off to lunch')",
    ]
    summary = lines[-1]
    assert summary.startswith("shut down: "), summary
    assert "1 unanswered goodbyes at shutdown" in summary
    assert "{" not in summary

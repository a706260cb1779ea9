"""What the UDP server logs: one line per session event, and a readable
summary at shutdown (issue 13 item 11)."""

from __future__ import annotations

import logging
import re

import pytest

from common.chat import events as ev
from common.wire.framing import encode
from udpchat.server import SEGMENTS_SENT, ChatServer

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


def test_the_shutdown_counts_the_segments_of_sessions_it_never_forgot(caplog: pytest.LogCaptureFixture) -> None:
    # A session whose goodbye goes unanswered is never forgotten by the
    # timers; its segments still count in the summary (a benchmark reads
    # the retransmissions there).
    caplog.set_level(logging.INFO)
    srv = ChatServer("127.0.0.1", 0, rate_limit=0)
    srv.start()
    deaf, token = raw_session(srv.address)
    try:
        deaf.sendto(encode(ev.Session(token)) + encode(ev.Data(0, 0, encode(ev.Register("deaf")))), srv.address)
        deaf.settimeout(5.0)
        deaf.recv(2048)  # its Welcome came: the server has sent it a segment
    finally:
        srv.shutdown()
        deaf.close()
    summary = [r.getMessage() for r in caplog.records][-1]
    assert "1 unanswered goodbyes at shutdown" in summary
    sent = re.search(rf"(\d+) {SEGMENTS_SENT}", summary)
    assert sent is not None, summary
    assert int(sent.group(1)) >= 2  # its Welcome and its Goodbye at least

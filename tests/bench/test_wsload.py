"""The websocket transport's load client: its framing against the server's
(wsproto on the server's side, ``twinchat.web.websocket.wrap`` on the way
back), and the ratio lines the benchmark prints."""

from __future__ import annotations

from dataclasses import replace

import wsproto
from wsproto.events import BytesMessage

from bench.cli import ratios
from bench.wsload import Unwrapper, masked
from common.chat import events as ev
from common.chat.rooms import LOBBY
from common.wire.framing import encode
from tests.bench.test_stats_results import record
from twinchat.web.websocket import Mode, wrap

FRAMES = [encode(ev.Say(LOBBY, "x" * n)) for n in (1, 110, 117, 118, 4000)] + [encode(ev.Ping(1))]


def test_masked_messages_are_one_frame_each_as_the_server_reads_them() -> None:
    server = wsproto.connection.Connection(wsproto.ConnectionType.SERVER)
    server.receive_data(masked(b"".join(FRAMES)))
    got = list(server.events())
    assert all(isinstance(e, BytesMessage) and e.message_finished for e in got)
    assert [bytes(e.data) for e in got] == FRAMES


def test_unwrapping_gives_back_the_frame_stream_however_it_is_split() -> None:
    stream = wrap(FRAMES, Mode.FRAMES) + b"\x88\x02\x03\xe8"  # then a close (1000)
    whole = Unwrapper()
    assert whole.feed(stream) == b"".join(FRAMES)
    assert whole.closed
    bytewise = Unwrapper()
    assert b"".join(bytewise.feed(stream[i : i + 1]) for i in range(len(stream))) == b"".join(FRAMES)
    assert bytewise.closed


def test_ratios_name_each_tcp_variant_against_tcp() -> None:
    tcp = record(transport="tcp", scenario="throughput", rate=10_000.0, p50_ms=2.0)
    ws = replace(tcp, transport="websocket", rate=6_000.0, p50_ms=3.0)
    udp = replace(tcp, transport="udp", rate=5_000.0)
    assert ratios([tcp, ws, udp]) == ["throughput: websocket / tcp = 0.60x the rate, 1.50x the p50 latency"]

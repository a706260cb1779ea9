"""Hypothesis strategies for the UDP reliability tests."""

from __future__ import annotations

from hypothesis import strategies as st

from common.chat import events as ev
from common.wire.framing import encode
from common.wire.limits import MAX_TEXT

#: Loss rates the issue asks for: 0 to 30% each way.
loss_rates = st.floats(min_value=0.0, max_value=0.3)

#: Duplication and reordering chances.
impairments = st.floats(min_value=0.0, max_value=0.2)

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _frame(size: int, index: int) -> bytes:
    """An encoded chat message of about ``size`` bytes of text, tagged by ``index``."""
    tag = f"{index}:"
    return encode(ev.Message("#lobby", "alice", tag + "x" * max(1, size - len(tag))))


#: Text sizes: mostly short chat lines, sometimes long enough to be fragmented.
text_sizes = st.one_of(st.integers(1, 200), st.integers(1000, MAX_TEXT - 16))


@st.composite
def frame_lists(draw: st.DrawFn, max_size: int = 60) -> list[bytes]:
    sizes = draw(st.lists(text_sizes, min_size=1, max_size=max_size))
    return [_frame(size, i) for i, size in enumerate(sizes)]


def message_frames(count: int, size: int = 64) -> list[bytes]:
    """``count`` distinct encoded messages of ``size`` bytes of text."""
    return [_frame(size, i) for i in range(count)]

"""The load generator's UDP clients (placeholder until the UDP server exists)."""

from __future__ import annotations

from collections.abc import Callable

from bench.load import Peer
from bench.scenarios import Transport
from bench.servers import Child


def maker(
    address: tuple[str, int], transport: Transport, *, seed: int, cpus: set[int] | None
) -> tuple[Callable[[int, bool], Peer], list[Child]]:
    """A factory of UDP load clients for ``transport``, and the processes it started.

    Raises:
        ImportError: the UDP side is not there yet.
    """
    raise ImportError("the UDP load clients are not built yet")

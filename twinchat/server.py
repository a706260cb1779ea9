"""One process, every transport: ``twinchat-server`` (``python -m twinchat.server``).

It serves the TCP port (frames and the text dialect) and the UDP port, the
same number by default, from one hub under one lock (``servercli.SharedHub``),
so TCP, ``nc`` and UDP users share rooms, nicks and the one order of every
room. ``tcpchat-server`` and ``udpchat-server`` are the one-transport forms of
the same thing.

Strategy: each transport's server is built as it would be alone, but handed
the shared hub and lock. The hub decides for everyone; the fan-out pushes to
each recipient through its own transport (``common.ports.Recipient``), so a
TCP reader delivering to a UDP member queues on that member's channel and
wakes the UDP pump, and the other way round.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence
from typing import Any, Final

from common.chat.hub import DEFAULT_MAX_ROOMS, DEFAULT_REPLAY, DEFAULT_ROOMS_PER_MEMBER
from common.chat.log import DEFAULT_HISTORY_LIMIT
from common.wire.limits import DEFAULT_PORT
from tcpchat import server as tcp
from twinchat import servercli
from twinchat.metrics import Metrics
from udpchat import server as udp

#: Tries at finding a port free for both TCP and UDP when asked for port 0.
PORT_TRIES: Final = 20

_DEFAULTS: Final = servercli.Defaults(
    port=DEFAULT_PORT,
    max_clients=tcp.DEFAULT_MAX_CLIENTS,
    idle_timeout=tcp.DEFAULT_IDLE_TIMEOUT,
    idle_help="drop a client silent this long (TCP clients are pinged at half, UDP ones get keepalives)",
    register_timeout=tcp.DEFAULT_REGISTER_TIMEOUT,
    max_queue=tcp.DEFAULT_MAX_QUEUE,
    max_queue_help="bytes held for a client (unsent, or unacknowledged over UDP) after which it is cut off",
)


class BothServer:
    """A TCP and a UDP chat server on one hub; see the module docstring.

    Args:
        udp_port: the UDP port; None for the TCP port's number.
        unreliable: the UDP side runs without acknowledgements.
        options: the other server options, as ``servercli.options`` gives them.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        udp_port: int | None = None,
        unreliable: bool = False,
        max_clients: int = tcp.DEFAULT_MAX_CLIENTS,
        max_rooms: int = DEFAULT_MAX_ROOMS,
        rooms_per_member: int = DEFAULT_ROOMS_PER_MEMBER,
        data_dir: str = "",
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        redis_url: str = "",
        heartbeat: float = 0.0,
        replay: int = DEFAULT_REPLAY,
        **options: Any,
    ) -> None:
        store = servercli.open_store(data_dir, history_limit, redis_url, heartbeat)
        self._shared = shared = servercli.SharedHub.make(
            max_clients, max_rooms, rooms_per_member, store=store, replay=replay
        )
        options.update(max_clients=max_clients, max_rooms=max_rooms, rooms_per_member=rooms_per_member, shared=shared)
        try:
            self._bind(host, port, udp_port, unreliable, options)
        except BaseException:
            shared.close()
            raise

    def _bind(self, host: str, port: int, udp_port: int | None, unreliable: bool, options: dict[str, Any]) -> None:
        # With port 0 the kernel picks the TCP port; the UDP one must then be
        # free under the same number, which it usually is: try a few.
        tcp_only = ("tls_cert", "tls_key", "allowed_origins")
        tls = {name: options.pop(name) for name in tcp_only if name in options}
        for _ in range(PORT_TRIES if port == 0 and udp_port is None else 1):
            self.tcp = tcp.ChatServer(host, port, **options, **tls)
            try:
                self.udp = udp.ChatServer(
                    host, self.tcp.address[1] if udp_port is None else udp_port, unreliable=unreliable, **options
                )
                return
            except OSError as exc:
                self.tcp.shutdown()
                if exc.errno != errno.EADDRINUSE or port != 0:
                    raise
        raise OSError(errno.EADDRINUSE, "no port free for both TCP and UDP")

    @property
    def address(self) -> tuple[str, int]:
        """The TCP (host, port); ``udp.address`` is the UDP one."""
        return self.tcp.address

    @property
    def metrics(self) -> Metrics:
        """What both transports and the hub report (``Metrics.render()`` gives the page)."""
        return self._shared.metrics

    def serve_forever(self) -> None:
        """Serve both until ``stop()`` or ``shutdown()``."""
        self.udp.start()
        self.tcp.serve_forever()

    def stop(self) -> None:
        """Make ``serve_forever`` return; safe from a signal handler."""
        self.udp.stop()
        self.tcp.stop()

    def shutdown(self, reason: str = "the server is shutting down") -> None:
        """Say goodbye to everyone, on both transports, and release everything."""
        # The TCP side's shutdown says goodbye through the shared hub to the
        # UDP members too; the UDP side's then waits for their acknowledgements.
        self.tcp.shutdown(reason)
        self.udp.shutdown(reason)
        self._shared.close()  # the store is written and closed last


def main(argv: Sequence[str] | None = None) -> int:
    """Run both transports until SIGINT or SIGTERM; return the exit code."""
    prog = "twinchat-server"
    p = servercli.parser(
        prog, "The twinchat chat server: TCP (frames and text) and UDP, one chat.", _DEFAULTS, tls=True
    )
    p.add_argument("--udp-port", type=int, default=None, help="the UDP port (default: the TCP port's number)")
    p.add_argument(
        "--unreliable",
        action="store_true",
        help="UDP without acknowledgements or retransmission: raw datagrams, losses counted",
    )
    args = p.parse_args(argv)

    def build() -> BothServer:
        return BothServer(
            args.host, args.port, udp_port=args.udp_port, unreliable=args.unreliable, **servercli.options(args)
        )

    def where(server: BothServer) -> str:
        udp_port = server.udp.address[1]
        unreliable = ", unreliable" if args.unreliable else ""
        tcp_kind = "tcp with tls" if server.tcp.tls else "tcp"
        if udp_port == server.address[1]:
            return f"({tcp_kind} and udp{unreliable})"
        return f"({tcp_kind}; udp on port {udp_port}{unreliable})"

    return servercli.run(args, build, prog=prog, mode=where)


if __name__ == "__main__":
    sys.exit(main())

"""The command line both servers share: same flags, same validation."""

from __future__ import annotations

import pytest

from tcpchat.server import _DEFAULTS as TCP_DEFAULTS
from twinchat import servercli
from udpchat.server import _DEFAULTS as UDP_DEFAULTS

BOTH = pytest.mark.parametrize("defaults", [TCP_DEFAULTS, UDP_DEFAULTS], ids=["tcp", "udp"])


@BOTH
def test_defaults_and_overrides(defaults: servercli.Defaults) -> None:
    p = servercli.parser("prog", "a server", defaults)
    args = p.parse_args([])
    assert (args.host, args.port, args.idle_timeout) == ("127.0.0.1", defaults.port, defaults.idle_timeout)
    args = p.parse_args(["--port", "0", "--rate-limit", "0", "--max-clients", "0", "--idle-timeout", "0.5"])
    assert (args.port, args.rate_limit, args.max_clients, args.idle_timeout) == (0, 0.0, 0, 0.5)


@BOTH
@pytest.mark.parametrize(
    "flags",
    [["--idle-timeout", "0"], ["--register-timeout", "-1"], ["--max-clients", "-1"], ["--rate-limit", "-5"]],
)
def test_impossible_values_are_refused(
    defaults: servercli.Defaults, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        servercli.parser("prog", "a server", defaults).parse_args(flags)
    assert caught.value.code == 2
    assert flags[0] in capsys.readouterr().err

"""twinchat, the product around the two transports: the client front end both
clients share (``twinchat.frontend``) and the command line both servers share
(``twinchat.servercli``). The protocol core is ``common``; the transports are
``tcpchat`` and ``udpchat``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _installed_version


def version() -> str:
    """The installed twinchat's version, for every command's ``--version``
    ("unknown" in a checkout that was never installed)."""
    try:
        return _installed_version("twinchat")
    except PackageNotFoundError:
        return "unknown"

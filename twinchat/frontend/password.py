"""Where a client's password comes from, and when it may leave the machine.

UDP carries it in clear, and TCP unless the client speaks TLS (``--tls``,
``--cafile``), so over an unencrypted link a password goes to another host
only when the person said so: with ``--allow-cleartext-password``, or a yes
on a terminal. Loopback needs no confirmation: nothing lies between, and an
encrypted link needs none either. A name is not resolved to decide:
``localhost`` is loopback, any other name counts as another host.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Final

from twinchat.frontend.link import is_loopback

#: The environment variable a script may pass its password in (not on the
#: command line, where other users of the machine can read it in ``ps``).
PASSWORD_ENV: Final = "TWINCHAT_PASSWORD"


def given_password(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The password from ``--password``, else from ``TWINCHAT_PASSWORD``, else ""."""
    if flag:
        return flag
    return (os.environ if environ is None else environ).get(PASSWORD_ENV, "")


class Cleartext:
    """Whether a password may be sent to ``host`` over an unencrypted link.

    Args:
        host: the server's address as given.
        allowed: ``--allow-cleartext-password``.
        encrypted: the link speaks TLS, so the password is not in clear.
    """

    def __init__(self, host: str, *, allowed: bool = False, encrypted: bool = False) -> None:
        self.host = host
        #: Another machine over an unencrypted link: a password sent there can be read on the way.
        self.remote = not encrypted and not is_loopback(host)
        self._ok = allowed or not self.remote

    @property
    def warning(self) -> str:
        """What the person is told before a password goes out in clear."""
        return (
            f"{self.host} is another machine and this link is not encrypted: anyone on the way can read your password"
        )

    def permits(self, confirm: Callable[[str], bool] | None) -> bool:
        """True if a password may go out: loopback, allowed, or ``confirm(warning)``
        said yes (asked once; None: nobody to ask, so no)."""
        if not self._ok and confirm is not None:
            self._ok = confirm(self.warning)
        return self._ok

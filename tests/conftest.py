"""What every test shares: servers started as processes keep their store in
the test's own temporary directory, never in the checkout, and never two
tests in one store; hypothesis runs without per-example deadlines."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# No per-example deadline: on a shared 2-core machine one slow example is the
# machine, not the code, and it failed whole runs. Every test is still bounded
# (pytest-timeout), and the number of examples is fixed.
settings.register_profile("twinchat", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("twinchat")


@pytest.fixture(autouse=True)
def _data_dir_outside_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A server's --data-dir defaults to $TWINCHAT_DATA_DIR; child processes inherit it.
    monkeypatch.setenv("TWINCHAT_DATA_DIR", str(tmp_path / "twinchat-data"))

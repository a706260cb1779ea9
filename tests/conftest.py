"""What every test shares: servers started as processes keep their store in
the test's own temporary directory, never in the checkout, and never two
tests in one store."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _data_dir_outside_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A server's --data-dir defaults to $TWINCHAT_DATA_DIR; child processes inherit it.
    monkeypatch.setenv("TWINCHAT_DATA_DIR", str(tmp_path / "twinchat-data"))

"""common/ is sans-IO: it imports no sockets, threads, selectors or clocks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

FORBIDDEN = {"socket", "threading", "select", "selectors", "time", "asyncio", "datetime"}
COMMON = Path(__file__).resolve().parent.parent / "common"


@pytest.mark.parametrize("path", sorted(COMMON.rglob("*.py")), ids=lambda p: str(p.relative_to(COMMON)))
def test_common_imports_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"{path} imports {sorted(imported & FORBIDDEN)}"

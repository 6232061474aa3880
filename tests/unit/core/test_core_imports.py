"""The import contract of the pure cores (issue 21): nothing under meshd/core/ imports I/O,
a clock, tasks or threads, and a core imports meshd only from meshd/core/, so nothing
reaches them through another meshd module either. No exemptions: a core that needs one of
these takes it as an argument (``now``, bytes read by a shell)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

CORE = Path(__file__).resolve().parents[3] / "meshd" / "core"
BANNED = (
    "asyncio",
    "socket",
    "time",
    "os",
    "subprocess",
    "threading",
    "sqlite3",
    "sqlite_utils",
    "aioquic.asyncio",
    "pyroute2",
    "textual",
)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, anywhere in it (a function's lazy import too)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
        elif isinstance(node, ast.ImportFrom):  # relative: resolved against the package
            package = path.relative_to(CORE.parent.parent).parent.parts
            base = package[: len(package) - node.level + 1]
            yield node.lineno, ".".join((*base, *([node.module] if node.module else [])))


def offences(path: Path) -> list[str]:
    found = []
    for line, module in imports(path):
        banned = [b for b in BANNED if module == b or module.startswith(b + ".")]
        outside = module.split(".")[0] == "meshd" and not module.startswith("meshd.core")
        if banned or outside:
            found.append(f"{path.name}:{line}: imports {module}")
    return found


def test_the_cores_import_no_io_clock_task_or_thread_and_meshd_only_from_core() -> None:
    sources = sorted(CORE.rglob("*.py"))
    assert len(sources) > 5
    assert [o for path in sources for o in offences(path)] == []


def test_the_check_sees_what_it_must(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"  # read, never imported
    bad.write_text(
        "import os.path\nfrom time import monotonic\nfrom meshd import mesh\n"
        "def f():\n    import asyncio\n    from meshd.core.keys import encode_key\n"
    )
    found = offences(bad)
    assert [o.split(": imports ")[1] for o in found] == ["os.path", "time", "meshd", "asyncio"]

"""What every golden-vector generator and its test share: one vector file's exact text,
writing a generator's files, and reading one back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def render(description: str, hex_text: str, json_form: Any) -> str:
    """One vector file: the bytes as hex and the JSON form, both ways checked by tests."""
    vector = {"description": description, "hex": hex_text, "json": json_form}
    return json.dumps(vector, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path, rendered: dict[str, str]) -> None:
    for name, text in rendered.items():
        (directory / name).write_text(text, encoding="utf-8")
        print(f"wrote {directory / name}")


def reader(directory: Path) -> Callable[[str], dict[str, Any]]:
    """Reads a vector file of ``directory`` by name."""

    def read(name: str) -> dict[str, Any]:
        vector = json.loads((directory / name).read_text(encoding="utf-8"))
        assert isinstance(vector, dict)
        return vector

    return read

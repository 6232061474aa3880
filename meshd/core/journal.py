"""How a core says what it did: a structured event (a name, then key=value fields).

The cores do not log by themselves (meshd.log keeps a ring and a lock, and a pure core
imports neither): the shell hands them its ``meshd.log.event``, a test a recorder or
``unheard``."""

from __future__ import annotations

import logging
from typing import Any, Protocol


class Journal(Protocol):
    def __call__(self, name: str, /, level: int = logging.INFO, **fields: Any) -> None: ...


def unheard(name: str, /, level: int = logging.INFO, **fields: Any) -> None:
    """A journal nobody reads."""

"""Structured logging: one event name per line, then key=value fields. Never a key."""

from __future__ import annotations

import logging
import sys
from typing import Any

logger = logging.getLogger("meshd")


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def _fmt(value: Any) -> str:
    text = str(value)
    return repr(text) if (" " in text or not text) else text


def event(name: str, /, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, " ".join([name, *(f"{k}={_fmt(v)}" for k, v in fields.items())]))

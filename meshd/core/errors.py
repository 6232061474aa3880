"""One base for "what a peer, a file or a person sent is refused" (pure).

Every refusal of outside input derives from ``BadInput``: ``reason`` is a short snake_case
code (what counters, ``refusals`` in status and a closed session carry), ``message`` says
where and why. An edge (a session's handler, a command, a file's loader) catches this one
class; our own misuse raises ValueError, TypeError or AssertionError and is never caught
as bad input.
"""

from __future__ import annotations


class BadInput(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message

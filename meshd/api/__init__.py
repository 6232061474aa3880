"""The local control API (docs/control-api.md): ``server`` answers on the daemon's Unix
socket, ``calls`` is its call table, ``schema`` declares every answer for both sides and
``client`` is how the CLI and the dashboard call. What a handler raises and returns is
named here too."""

from meshd.api.server import (
    API_VERSION,
    SOCKET_GROUP,
    Caller,
    CallError,
    Handler,
    Stream,
    answer,
    serve,
)

__all__ = [
    "API_VERSION",
    "SOCKET_GROUP",
    "CallError",
    "Caller",
    "Handler",
    "Stream",
    "answer",
    "serve",
]

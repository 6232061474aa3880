"""Typed client of the local control API (docs/control-api.md): how the CLI and the TUI
talk to a running meshd.

One method per call, each answer checked against the types below where it enters: a
result that does not fit raises ``BadAnswer`` naming the field, so no caller meets a
``KeyError`` half-way through a screen. The status document is kept as the daemon's own
JSON object (TypedDicts, unknown keys kept) because ``meshd status --json`` prints it as it
came and later daemons add fields to it.

Errors, all ``ControlError`` with a reason ``code`` and a ``message``:

- ``DaemonUnreachable``: no daemon answered (``no_daemon``, ``timeout``);
- ``CallRefused``: the daemon answered with an error, its code as it sent it
  (``bad_args``, ``unknown_call``, ``revoked`` ...);
- ``BadAnswer``: something answered, but not a valid answer (``bad_reply``).

Blocking, one connection per call; ``subscribe`` keeps its connection and yields what the
daemon streams (the dashboard reads it from a worker thread).
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import (
    Any,
    BinaryIO,
    TypedDict,
    TypeVar,
    cast,
)

from meshd.api import schema
from meshd.api.schema import (
    BlockResult,
    DefinitionAdopted,
    EventPage,
    EventsDropped,
    Gateway,
    LoggedEvent,
    Neighbour,
    Page,
    RevocationsAdded,
    Route,
    Status,
    StatusUpdate,
    StreamItem,
    Usage,
    VersionInfo,
)
from meshd.api.server import API_VERSION
from meshd.config import Config, socket_path

DEFAULT_TIMEOUT = 5.0
MAX_ANSWER = 16 * 1024 * 1024  # a status of thousands of routes fits many times over


def locate_socket(flag: str | os.PathLike[str] | None = None, cfg: Config | None = None) -> Path:
    """The control socket, as every command finds it: ``--socket`` when given, else
    ``$MESHD_SOCKET``, else the config's ``[control] socket``, else the default."""
    return Path(flag) if flag else socket_path(cfg)


# ---- errors ------------------------------------------------------------------------------


class ControlError(Exception):
    """A control call that gave no result: ``code`` is the reason code, ``message`` the
    reason in words; ``str()`` is ``"code: message"``, one line."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class DaemonUnreachable(ControlError):
    """No daemon answered: no socket, nothing listening, not allowed, or no answer in time
    (``no_daemon``, ``timeout``); or a subscription's daemon went away (``disconnected``)."""


class CallRefused(ControlError):
    """The daemon answered the call with an error; ``code`` is the API's error code."""


class BadAnswer(ControlError):
    """Something answered, but not one JSON answer line of this API, or a result that does
    not fit the call's types (``code`` is ``bad_reply``)."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_reply", message)


# ---- the client --------------------------------------------------------------------------


class ControlClient:
    """The calls of control API version 1, blocking, one connection per call."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path, self.timeout = Path(path), timeout

    def version(self) -> VersionInfo:
        return _dataclass(VersionInfo, self.call("version"), "version")

    def status(self) -> Status:
        return parse_status(self.call("status"))

    def revocations(self) -> list[dict[str, Any]]:
        """The revocations the daemon enforces, as ``meshd decode`` prints them."""
        result = self.call("revocations")
        _check(result, list[dict[str, Any]], "revocations")
        return cast(list[dict[str, Any]], result)

    def add_revocations(self, records: Sequence[bytes]) -> RevocationsAdded:
        """Hand over canonical Revocation records: all are taken or none (``CallRefused``
        naming the first bad one)."""
        result = self.call("add_revocations", records=[r.hex() for r in records])
        return _dataclass(RevocationsAdded, result, "add_revocations")

    def mesh_definition(self, records: Sequence[bytes] = ()) -> DefinitionAdopted:
        """Hand over canonical mesh definitions (admin rotation), or none: the one the
        daemon holds, either way."""
        result = self.call("mesh_definition", records=[r.hex() for r in records])
        return _dataclass(DefinitionAdopted, result, "mesh_definition")

    def proposals(self) -> list[dict[str, Any]]:
        """What admins proposed and the daemon holds, short of its quorum."""
        result = _checked(self.call("proposals"), list[dict[str, Any]], "proposals")
        return cast(list[dict[str, Any]], result)

    def propose(self, records: Sequence[bytes]) -> list[dict[str, Any]]:
        """Hand over proposals (new, signed or withdrawn from): what each did (``outcome``:
        new, grew, same, carried), or ``CallRefused`` naming why one was refused."""
        result = self.call("propose", records=[r.hex() for r in records])
        return cast(list[dict[str, Any]], _checked(result, list[dict[str, Any]], "propose"))

    def block(self, node_id: str, blocked: bool = True) -> BlockResult:
        result = self.call("block", node_id=node_id, blocked=blocked)
        return _dataclass(BlockResult, result, "block")

    def devices(self) -> list[dict[str, Any]]:
        """The household's roaming devices, each with its last handshake and bytes."""
        result = self.call("devices")
        _check(result, list[dict[str, Any]], "devices")
        return cast(list[dict[str, Any]], result)

    def device_add(
        self, name: str, endpoint: str | None = None, everything: bool = False
    ) -> dict[str, Any]:
        """A new device; the answer's ``config`` is its wg-quick file (its private key)."""
        result = self.call("device_add", name=name, endpoint=endpoint, all=everything)
        _check(result, dict[str, Any], "device_add")
        return cast(dict[str, Any], result)

    def device_remove(self, name: str) -> dict[str, Any]:
        result = self.call("device_remove", name=name)
        _check(result, dict[str, Any], "device_remove")
        return cast(dict[str, Any], result)

    def releases(self) -> dict[str, Any] | None:
        """The release held and served, and the one being fetched (null: none yet)."""
        result = self.call("releases")
        if result is not None and not isinstance(result, dict):
            raise ControlError("bad_answer", "releases: expected an object or null")
        return result

    def publish_release(self, manifest: bytes) -> dict[str, Any]:
        result = self.call("publish_release", manifest=manifest.hex())
        if not isinstance(result, dict):
            raise ControlError("bad_answer", "publish_release: expected an object")
        return result

    def neighbours(self) -> list[Neighbour]:
        return _checked(self.call("neighbours"), list[Neighbour], "neighbours")

    def routes(self) -> list[Route]:
        return _checked(self.call("routes"), list[Route], "routes")

    def gateways(self) -> Gateway:
        return _checked(self.call("gateways"), Gateway, "gateways")

    def usage(self) -> list[Usage]:
        return _checked(self.call("usage"), list[Usage], "usage")

    def receipts(self, after: str | None = None, limit: int = 100) -> Page:
        """Receipts signed by or for this node, oldest first, ``limit`` at a time."""
        return _checked(self.call("receipts", after=after, limit=limit), Page, "receipts")

    def disputes(self, after: str | None = None, limit: int = 100) -> Page:
        return _checked(self.call("disputes", after=after, limit=limit), Page, "disputes")

    def events(
        self, after: int = 0, limit: int = 100, name: str = "", level: str = "debug"
    ) -> EventPage:
        """The daemon's recent events after id ``after`` whose names start with ``name``,
        at ``level`` or above."""
        result = self.call("events", after=after, limit=limit, name=name, level=level)
        _check(result, _EventPageAnswer, "events")
        return EventPage(
            [
                _dataclass(LoggedEvent, item, f"events.items[{i}]")
                for i, item in enumerate(result["items"])
            ],
            result["next"],
            result["last_id"],
        )

    def subscribe(
        self,
        interval: float = 1.0,
        after: int | None = None,
        name: str = "",
        level: str = "debug",
    ) -> Subscription:
        """A status update at once and every ``interval`` s, and each new event (after id
        ``after`` when given, so a reconnecting reader misses none the daemon still
        holds), until ``close()``. Reading it raises ``DaemonUnreachable`` (``timeout``,
        ``disconnected``) when the daemon stops answering."""
        args: dict[str, Any] = {"interval": interval, "name": name, "level": level}
        if after is not None:
            args["after"] = after
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stream = sock.makefile("rb")
        try:
            with self._reaching():
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                sock.sendall(_request("subscribe", args))
                head = _result(_decode(stream.readline(MAX_ANSWER + 1)))
            _check(head, _SubscribeAnswer, "subscribe")
            # The daemon sends a status every interval: silence beyond that is a hang.
            sock.settimeout(self.timeout + interval)
        except BaseException:
            stream.close()
            sock.close()
            raise
        return Subscription(self.path, sock, stream, head["interval"], head["last_id"])

    def daemon_pid(self) -> int:
        """The daemon's process id, as the kernel says who listens on the socket
        (SO_PEERCRED; meshd binds its socket itself): what stops it where no service
        manager runs it (``meshd leave``)."""
        with self._reaching(), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(str(self.path))
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, _uid, _gid = struct.unpack("3i", creds)
        return int(pid)

    def call(self, call: str, **args: Any) -> Any:
        """One call, its result unchecked (the typed methods above check theirs)."""
        return _result(_decode(self._exchange(_request(call, args))))

    def _exchange(self, request: bytes) -> bytes:
        with self._reaching(), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(str(self.path))
            sock.sendall(request)
            with sock.makefile("rb") as answer:
                return answer.readline(MAX_ANSWER + 1)

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Socket errors as ``DaemonUnreachable`` with the reason in words."""
        try:
            yield
        except FileNotFoundError:
            raise DaemonUnreachable("no_daemon", f"no meshd socket at {self.path}") from None
        except ConnectionRefusedError:
            raise DaemonUnreachable("no_daemon", f"nothing listens on {self.path}") from None
        except TimeoutError:
            raise DaemonUnreachable("timeout", f"meshd at {self.path} did not answer") from None
        except OSError as exc:
            raise DaemonUnreachable("no_daemon", f"{self.path}: {exc.strerror}") from None


class Subscription:
    """What ``ControlClient.subscribe`` streams, one item per ``receive()`` (or iteration):
    a ``StatusUpdate``, a ``LoggedEvent`` or an ``EventsDropped``; kinds this client does
    not know are skipped (later daemons may add some). ``close()`` may come from another
    thread: a ``receive()`` blocked there returns None, and so does every later one."""

    def __init__(
        self, path: Path, sock: socket.socket, stream: BinaryIO, interval: float, last_id: int
    ) -> None:
        self.path, self._sock, self._stream = path, sock, stream
        self.interval = interval  # as the daemon granted it
        self.last_id = last_id  # the newest event when the subscription began
        self._closed = False

    def receive(self) -> StreamItem | None:
        while True:
            try:
                line = self._stream.readline(MAX_ANSWER + 1)
            except TimeoutError:
                if self._closed:
                    return None
                raise DaemonUnreachable(
                    "timeout", f"meshd at {self.path} stopped sending updates"
                ) from None
            except (OSError, ValueError):  # ValueError: the file was closed under us
                if self._closed:
                    return None
                raise DaemonUnreachable(
                    "disconnected", f"lost the connection to meshd at {self.path}"
                ) from None
            if self._closed:
                return None
            if not line:
                raise DaemonUnreachable("disconnected", f"meshd at {self.path} went away")
            item = _stream_item(line)
            if item is not None:
                return item

    def __iter__(self) -> Iterator[StreamItem]:
        while (item := self.receive()) is not None:
            yield item

    def close(self) -> None:
        self._closed = True
        with suppress(OSError):  # already gone
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a receive() blocked in a thread
        self._stream.close()
        self._sock.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SubscribeAnswer(TypedDict):
    interval: float
    last_id: int


class _EventPageAnswer(TypedDict):
    items: list[dict[str, Any]]
    next: int | None
    last_id: int


class _StreamLine(TypedDict):
    kind: str


_Result = TypeVar("_Result")


def _check(value: Any, expected: Any, where: str) -> None:
    try:
        schema.check(value, expected, where)
    except schema.Mismatch as exc:
        raise BadAnswer(str(exc)) from None


def _dataclass(cls: type[_Result], result: Any, call: str) -> _Result:
    try:
        return schema.build(cls, result, call)
    except schema.Mismatch as exc:
        raise BadAnswer(str(exc)) from None


def _stream_item(line: bytes) -> StreamItem | None:
    """One streamed line as its item; None for a kind this client does not know."""
    message = _json_line(line, "streamed line")
    _check(message, _StreamLine, "stream")
    kind = message["kind"]
    if kind == "status":
        return StatusUpdate(parse_status(message.get("status")))
    if kind == "event":
        return _dataclass(LoggedEvent, message, "stream.event")
    if kind == "dropped":
        return _dataclass(EventsDropped, message, "stream.dropped")
    return None


def parse_status(document: Any) -> Status:
    """A decoded status document, checked (``BadAnswer`` naming the first field that does
    not fit): what ``status()`` returns, and how recorded snapshots are read back."""
    _check(document, Status, "status")
    return cast(Status, document)


def _checked(result: Any, expected: Any, call: str) -> Any:
    _check(result, expected, call)
    return result


def _result(reply: dict[str, Any]) -> Any:
    if reply["ok"]:
        return reply["result"]
    raise CallRefused(reply["error"]["code"], reply["error"]["message"])


def _request(call: str, args: dict[str, Any]) -> bytes:
    return json.dumps({"v": API_VERSION, "call": call, "args": args}).encode() + b"\n"


def _json_line(line: bytes, what: str) -> Any:
    """One whole line of JSON, at most MAX_ANSWER bytes (``what`` names it in the error)."""
    if len(line) > MAX_ANSWER:
        raise BadAnswer(f"{what} is longer than {MAX_ANSWER} bytes")
    if not line.endswith(b"\n"):
        raise BadAnswer(f"{what} was cut short")
    try:
        return json.loads(line)
    except ValueError:  # UnicodeDecodeError is one too
        raise BadAnswer(f"{what} is not JSON") from None


def _decode(line: bytes) -> dict[str, Any]:
    """One answer line, checked for the framing of docs/control-api.md."""
    if not line:
        raise BadAnswer("meshd closed the connection without answering")
    reply = _json_line(line, "daemon answer")
    if not isinstance(reply, dict):
        raise BadAnswer("daemon answer is not a JSON object")
    if reply.get("v") != API_VERSION:
        raise BadAnswer(f"daemon answered in version {reply.get('v')!r}, not {API_VERSION}")
    if reply.get("ok") is True:
        if "result" not in reply:
            raise BadAnswer("daemon answer has no result")
    elif reply.get("ok") is False:
        _check(reply.get("error"), _ErrorAnswer, "error")
    else:
        raise BadAnswer("daemon answer has no 'ok' true or false")
    return reply


class _ErrorAnswer(TypedDict):
    code: str
    message: str

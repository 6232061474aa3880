"""The control API's schema (docs/control-api.md), one declaration for the daemon that
answers and the client that reads: the status document and every call's result as
TypedDicts and frozen dataclasses, and ``check``, which holds decoded JSON against them.

Later daemons add keys: every TypedDict tolerates (and keeps) keys it does not name, and
the keys a v1 daemon may not have sent yet sit in the ``total=False`` half. ``check``
raises ``Mismatch`` naming the first field that does not fit."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import (
    Any,
    TypedDict,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)
from typing import is_typeddict as _is_typeddict


class Mismatch(ValueError):
    """Decoded JSON that does not fit the schema; the message names the field."""


class _NeighbourControlRequired(TypedDict):
    session: str
    address: str | None
    verified: bool
    routing: bool
    refusal: str | None
    found_by: list[str]


class NeighbourControl(_NeighbourControlRequired, total=False):
    """Why a neighbour is not ``up`` (its session, as the control plane sees it)."""

    protocol: str | None  # the session's version (ALPN id, e.g. meshd/2); null when down
    features: list[str]  # what it announced (CAPABILITIES) that we know; [] on meshd/1
    reached: str | None  # segment, bootstrap, punched, internet; null without a session


class _NeighbourRequired(TypedDict):
    node_id: str
    name: str
    interface: str
    state: str  # up, down, connecting
    rtt_ms: float | None
    loss: float | None


class Neighbour(_NeighbourRequired, total=False):
    """One neighbour; the link fields (``liveness`` to ``tx_bytes``) only once the
    WireGuard link exists: read them with ``.get``."""

    cost: int | None
    endpoint: str | None
    liveness: str
    listen_port: int
    silent_s: float | None
    last_handshake: float | None
    rx_bytes: int
    tx_bytes: int
    control: NeighbourControl
    refusals: dict[str, int]  # what it sent that we refused, by reason code
    black_holes: list[str]  # destinations it is kept out of the routes to (no answer)


class Route(TypedDict):
    prefix: str
    via: str | None  # node id
    interface: str
    metric: int


class _CandidateRequired(TypedDict):
    node_id: str
    metric: int | None  # None: no route to it
    usable: bool
    reason: str


class GatewayCandidate(_CandidateRequired, total=False):
    mesh_ipv4: str
    available: bool
    accepts_new: bool
    rate_cap_kbit: int | None


class _UplinkRequired(TypedDict):
    interface: str
    state: str  # unknown, up, down
    reason: str
    since_s: float | None


class Uplink(_UplinkRequired, total=False):
    rx_bytes: int | None  # the interface's counters (null while it is gone)
    tx_bytes: int | None


class UsageDays(TypedDict):
    """Receipts signed for, day by day (UTC, oldest first), per neighbour node id: what
    we relayed for it (``gave``) and it for us (``took``)."""

    days: list[str]
    gave: dict[str, list[int]]
    took: dict[str, list[int]]


class Sharing(TypedDict):
    announced: bool
    rate_cap_kbit: int | None
    accepts_new: bool
    users: list[str]
    blocked: list[str]
    monthly_quota_mb: int | None
    month: str
    exit_bytes: dict[str, int]


class ExitCheck(TypedDict):
    """The checks through the exit tunnel (meshd.core.routing.exit_check)."""

    target: str
    gateway: str | None  # whose exit is checked; None: no exit in use
    checks: int
    failed: int
    failed_in_a_row: int
    last: str | None
    no_internet: dict[str, int]  # gateway -> times it failed two checks in a row


class _GatewayRequired(TypedDict):
    selected: str | None
    candidates: list[GatewayCandidate]


class Gateway(_GatewayRequired, total=False):
    uplink: Uplink | None
    using: str  # own_uplink, exit, none
    exit_gateway: str | None
    exit_check: ExitCheck | None
    sharing: Sharing | None


class _UsageRequired(TypedDict):
    node_id: str
    relayed_for_bytes: int
    relayed_to_bytes: int


class ProviderReceipts(TypedDict):
    """This node relays for the neighbour: its last claim, the neighbour's last signed
    figure, what no signed receipt covers yet against the credit allowed, enforcement."""

    epoch: int
    seq: int | None
    claimed_for_bytes: int
    claimed_to_bytes: int
    receipted_for_bytes: int
    receipted_to_bytes: int
    unreceipted_bytes: int
    credit_bytes: int
    state: str  # ok, throttled
    reason: str | None
    disputes: int


class ConsumerReceipts(TypedDict):
    """The neighbour relays for this node: what we last signed, whether it throttles us."""

    epoch: int | None
    seq: int | None
    signed_for_bytes: int
    signed_to_bytes: int
    throttled: bool
    reason: str | None
    disputes: int


class Usage(_UsageRequired, total=False):
    sent_bytes: int  # as the neighbour's consumer
    received_bytes: int
    provider: ProviderReceipts  # both absent until receipts are exchanged with it
    consumer: ConsumerReceipts


class ReceiptTerms(TypedDict):
    """How far a claim may exceed the consumer's own count and still be signed, and the
    unreceipted bytes a provider relays before it throttles."""

    tolerance_percent: float
    tolerance_bytes: int
    credit_bytes: int


class _StatusRequired(TypedDict):
    node_id: str
    name: str
    mesh_ipv4: str
    mesh_ipv6: str
    backend: str
    neighbours: list[Neighbour]
    routes: list[Route]


class Status(_StatusRequired, total=False):
    """The ``status`` call's document (docs/control-api.md), as the daemon sent it."""

    routing: str
    uptime_s: float
    gateway: Gateway
    usage: list[Usage]
    receipts: ReceiptTerms | None  # null before the receipts service runs
    membership: dict[str, Any] | None  # our certificate's window and its renewal
    clock: dict[str, Any]  # the mesh's time as this node keeps it
    mesh: dict[str, Any]  # the mesh definition's serial, admins and threshold
    proposals: list[dict[str, Any]]  # what admins proposed, short of its quorum yet
    directory: dict[str, Any]  # members (certificates held) and digest
    api: dict[str, Any]  # refused: control API callers refused a changing call, by reason
    discovery: dict[str, Any]  # candidates held, beacons and candidates refused by reason
    usage_days: UsageDays | None  # null until the receipts service read its ledger
    metrics: dict[str, Any] | None  # the Prometheus endpoint; null while off
    map: dict[str, Any]  # the community map's records kept, and where its files go
    releases: dict[str, Any]  # the release held and served, the one being fetched
    devices: dict[str, Any]  # the household's roaming devices, and their interface


class Page(TypedDict):
    """One page of ``receipts`` or ``disputes``: pass ``next`` as ``after`` for the
    following one; null: this is the last."""

    items: list[dict[str, Any]]
    next: str | None


@dataclass(frozen=True)
class LoggedEvent:
    """One event of the daemon's log (meshd.log): ``level`` is ``debug`` .. ``critical``."""

    id: int
    time: float  # Unix time
    level: str
    name: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class EventPage:
    items: list[LoggedEvent]
    next: int | None  # the ``after`` for the rest; null: no more matching events yet
    last_id: int  # the newest event the daemon holds


@dataclass(frozen=True)
class StatusUpdate:
    """A subscription's periodic status document."""

    status: Status


@dataclass(frozen=True)
class EventsDropped:
    """A subscription fell behind and lost ``count`` events here."""

    count: int


StreamItem = LoggedEvent | StatusUpdate | EventsDropped


@dataclass(frozen=True)
class VersionInfo:
    meshd: str
    api: int
    python: str


@dataclass(frozen=True)
class RevocationsAdded:
    added: int  # new to the daemon: stored, spread and enforced
    known: int  # it had them already


@dataclass(frozen=True)
class DefinitionAdopted:
    adopted: int  # how many of those handed over were newer and taken
    definition: dict[str, Any]  # the mesh definition the daemon holds now, as JSON


@dataclass(frozen=True)
class BlockResult:
    node_id: str
    blocked: bool


# ---- checking decoded JSON against the declarations above ----------------------------


_Result = TypeVar("_Result")


def build(cls: type[_Result], result: Any, call: str) -> _Result:
    """``cls`` built from the keys it names (others ignored), each checked first."""
    hints = _hints(cls)
    check(result, dict[str, Any], call)
    for key, expected in hints.items():
        if key not in result:
            raise Mismatch(f"{call}: missing {key!r}")
        check(result[key], expected, f"{call}.{key}")
    return cls(**{key: result[key] for key in hints})


_HINTS: dict[object, dict[str, Any]] = {}  # get_type_hints evaluates strings: once per type


def _hints(tp: object) -> dict[str, Any]:
    hints = _HINTS.get(tp)
    if hints is None:
        hints = _HINTS[tp] = get_type_hints(tp)
    return hints


def check(value: Any, expected: Any, where: str) -> None:
    """Raise Mismatch unless decoded JSON ``value`` fits ``expected``: one of the types
    these declarations use (str, int, float, bool, None, Any, X | None, list[X],
    dict[str, X], a TypedDict)."""
    if expected is Any:
        return
    origin = get_origin(expected)
    if origin is types.UnionType or origin is Union:
        for option in get_args(expected):
            if _shallow_fits(value, option):
                check(value, option, where)  # a mismatch further in is named there
                return
        raise Mismatch(f"{where}: expected {_describe(expected)}, got {_kind(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise Mismatch(f"{where}: expected a list, got {_kind(value)}")
        (item,) = get_args(expected)
        for i, element in enumerate(value):
            check(element, item, f"{where}[{i}]")
        return
    if origin is dict or _is_typeddict(expected):
        if not isinstance(value, dict):
            raise Mismatch(f"{where}: expected an object, got {_kind(value)}")
        if origin is dict:
            _, item = get_args(expected)
            for key, element in value.items():
                check(element, item, f"{where}.{key}")
            return
        for key, field_type in _hints(expected).items():
            if key in value:
                check(value[key], field_type, f"{where}.{key}")
            elif key in expected.__required_keys__:
                raise Mismatch(f"{where}: missing {key!r}")
        return
    if not _fits(value, expected):
        raise Mismatch(f"{where}: expected {_describe(expected)}, got {_kind(value)}")


def _shallow_fits(value: Any, expected: Any) -> bool:
    """Whether ``value`` is of the kind ``expected`` names, not looking inside."""
    if get_origin(expected) is list:
        return isinstance(value, list)
    if get_origin(expected) is dict or _is_typeddict(expected):
        return isinstance(value, dict)
    return _fits(value, expected)


def _fits(value: Any, expected: Any) -> bool:
    if expected is type(None):
        return value is None
    if expected is bool or expected is str:
        return isinstance(value, expected)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:  # JSON does not tell 3 from 3.0
        return isinstance(value, int | float) and not isinstance(value, bool)
    raise TypeError(f"_check does not know {expected!r}")  # our own declaration is wrong


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _describe(expected: Any) -> str:
    options = get_args(expected) if get_origin(expected) in (types.UnionType, Union) else ()
    if options:
        return " or ".join(_describe(o) for o in options)
    if expected is type(None):
        return "null"
    if get_origin(expected) is list:
        return "a list"
    return _NAMES.get(expected, "an object")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else "a string"
    if isinstance(value, int | float):
        return repr(value)
    return "a list" if isinstance(value, list) else "an object"

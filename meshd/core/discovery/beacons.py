"""Discovery beacons as a pure core: when to broadcast, and what a received beacon means.

Bytes and ``now`` in; bytes to send, a deadline and Discovered/Rejected out. Two clocks come
in: a monotonic one (seconds, any origin) for the schedule and the peer table, and the wall
clock (Unix seconds) only for the signed timestamps, because those are compared across
machines.

Sending, per underlay interface:
- a burst when the interface is added (at +0, +1, +2 s), flagged SOLICIT: "I am starting";
- then one periodic beacon every ``interval_s`` (30 s), shortened by up to ``jitter`` of
  it at random so that nodes started together drift apart;
- and promptly, at most once per ``min_gap_s`` (1 s) per interface, after hearing a node
  that is new on that interface or that solicits: a newcomer is found within about a
  second although periodic beacons are rare. Prompt beacons never solicit, so answers do
  not trigger answers: a segment of N nodes sends at most N beacons per second whatever
  it hears.

Receiving: a beacon proves a key, not membership, and its source address is not signed.
Only one from an address inside the receiving interface's subnet (not its network or
broadcast address) is read at all (``off_subnet``): a node is dialled where a beacon says,
so a beacon from anywhere else would make us send handshakes to any address of the
internet. Every refusal but our own looped-back beacons is counted by reason
(``refusals``; ``meshd status --json`` -> ``discovery``).
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from nacl.signing import SigningKey

from meshd.core.endpoints import Address
from meshd.core.keys import node_id_from_public
from meshd.core.proto.beacon import (
    MESH_ID_LENGTH,
    BeaconError,
    BeaconReason,
    make_beacon,
    parse_beacon,
)


class DiscoveryReason(enum.StrEnum):
    OTHER_MESH = "other_mesh"
    OWN_BEACON = "own_beacon"  # our own broadcast looped back: not worth a log line
    STALE = "stale"  # the signed timestamp is too far from our wall clock
    REPLAY = "replay"  # not newer than the last beacon accepted from that node there
    OFF_SUBNET = "off_subnet"  # from outside the receiving interface's subnet


@dataclass(frozen=True)
class Discovered:
    """A verified beacon from another node of our mesh, heard on ``ifname``.

    ``new``: the node was not known on this interface (or was silent longer than
    ``forget_after_s``): dial it. ``address_changed``: known, but at another address or
    port than before: update its endpoint.
    """

    node_id: str
    address: Address  # (source IP of the datagram, the QUIC port in the beacon)
    ifname: str
    new: bool
    address_changed: bool = False
    solicit: bool = False


@dataclass(frozen=True)
class Rejected:
    reason: BeaconReason | DiscoveryReason
    detail: str = ""

    @property
    def quiet(self) -> bool:
        """True when the reject is routine and should not be logged (our own beacon)."""
        return self.reason is DiscoveryReason.OWN_BEACON


@dataclass(frozen=True)
class BeaconSettings:
    interval_s: float = 30.0  # between periodic beacons on one interface
    jitter: float = 0.25  # periodic gaps are interval_s * (1 - jitter * random)
    burst_offsets_s: tuple[float, ...] = (0.0, 1.0, 2.0)  # after an interface is added
    min_gap_s: float = 1.0  # prompt beacons: at most one per interface per this
    prompt_delay_s: float = 0.2  # a prompt beacon waits up to this (random): not all at once
    max_skew_s: float | None = 600.0  # |timestamp - our wall clock| allowed; None: no check
    forget_after_s: float = 120.0  # a node silent this long is new again when heard
    max_peers: int = 1024  # (node, interface) entries kept; the least recently heard go

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.min_gap_s < 0 or self.prompt_delay_s < 0:
            raise ValueError("interval_s must be positive, min_gap_s and prompt_delay_s >= 0")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter}")
        if list(self.burst_offsets_s) != sorted(self.burst_offsets_s) or any(
            o < 0 for o in self.burst_offsets_s
        ):
            raise ValueError("burst_offsets_s must be sorted and non-negative")
        if self.max_skew_s is not None and self.max_skew_s <= 0:
            raise ValueError("max_skew_s must be positive or None")
        if self.max_peers < 1:
            raise ValueError("max_peers must be at least 1")


@dataclass
class _Interface:
    burst: list[float]  # absolute times of the burst beacons still to send
    periodic_at: float | None = None
    prompt_at: float | None = None
    last_sent: float | None = None

    def next_at(self) -> float | None:
        times = [t for t in (self.periodic_at, self.prompt_at) if t is not None]
        if self.burst:
            times.append(self.burst[0])
        return min(times, default=None)


class BeaconScheduler:
    """When to send a beacon on which interface. Knows nothing of bytes or keys.

    ``random`` returns a float in [0, 1) (``random.Random().random``; tests pass a fixed
    one): it is the jitter of periodic beacons and the delay of prompt ones.
    """

    def __init__(self, settings: BeaconSettings, random: Callable[[], float]) -> None:
        self.settings = settings
        self._random = random
        self._interfaces: dict[str, _Interface] = {}

    @property
    def interfaces(self) -> frozenset[str]:
        return frozenset(self._interfaces)

    def set_interfaces(self, ifnames: Iterable[str], now: float) -> None:
        """The interfaces to beacon on from now: added ones start their burst at ``now``,
        kept ones keep their schedule, the others are dropped."""
        wanted = set(ifnames)
        for ifname in set(self._interfaces) - wanted:
            del self._interfaces[ifname]
        for ifname in sorted(wanted - set(self._interfaces)):
            burst = [now + offset for offset in self.settings.burst_offsets_s]
            self._interfaces[ifname] = _Interface(burst=burst)
            if not burst:
                self._interfaces[ifname].periodic_at = now

    def get_timer(self) -> float | None:
        """The next time ``due`` has something to send; None with no interfaces."""
        return min(
            (t for iface in self._interfaces.values() if (t := iface.next_at()) is not None),
            default=None,
        )

    def due(self, now: float) -> list[tuple[str, bool]]:
        """(interface, solicit) for every beacon to send now; they count as sent."""
        out = []
        for ifname in sorted(self._interfaces):
            iface = self._interfaces[ifname]
            at = iface.next_at()
            if at is None or at > now:
                continue
            solicit = bool(iface.burst) and iface.burst[0] <= now
            while iface.burst and iface.burst[0] <= now:
                iface.burst.pop(0)
            iface.prompt_at = None
            iface.last_sent = now
            iface.periodic_at = None if iface.burst else self._periodic_after(now)
            out.append((ifname, solicit))
        return out

    def trigger(self, ifname: str, now: float) -> None:
        """Someone on ``ifname`` should hear from us soon: a prompt beacon, unless a
        scheduled one comes first; never sooner than ``min_gap_s`` after the last one."""
        iface = self._interfaces.get(ifname)
        if iface is None:
            return
        at = now + self.settings.prompt_delay_s * self._random()
        if iface.last_sent is not None:
            at = max(at, iface.last_sent + self.settings.min_gap_s)
        scheduled = iface.next_at()
        if scheduled is not None and scheduled <= at:
            return
        iface.prompt_at = at

    def _periodic_after(self, now: float) -> float:
        s = self.settings
        return now + s.interval_s * (1.0 - s.jitter * self._random())


@dataclass
class _Peer:
    address: Address
    timestamp_ms: int  # of the last beacon accepted: later ones must be newer
    heard_at: float  # monotonic


class BeaconState:
    """One node's beacons: what to send, and what to make of what it hears.

    ``receive`` never raises on any bytes: every problem is a Rejected with its reason.
    """

    def __init__(
        self,
        *,
        mesh_id: bytes,
        signing_key: SigningKey,
        quic_port: int,
        random: Callable[[], float],
        settings: BeaconSettings | None = None,
    ) -> None:
        if len(mesh_id) != MESH_ID_LENGTH:
            raise ValueError(f"mesh_id must be {MESH_ID_LENGTH} bytes")
        if not 1 <= quic_port <= 0xFFFF:
            raise ValueError(f"quic_port must be in 1..65535, got {quic_port}")
        self.mesh_id = mesh_id
        self.signing_key = signing_key
        self.quic_port = quic_port
        self.settings = settings or BeaconSettings()
        self.node_id = node_id_from_public(bytes(signing_key.verify_key))
        self.scheduler = BeaconScheduler(self.settings, random)
        self._peers: OrderedDict[tuple[str, str], _Peer] = OrderedDict()  # least recent first
        self._last_timestamp_ms = -1
        self._subnets: dict[str, ipaddress.IPv4Network] = {}
        # What was refused, by reason (our own looped-back beacons are not counted).
        self.refusals: dict[str, int] = {}

    # -- sending -------------------------------------------------------------------------

    def set_interfaces(self, subnets: Mapping[str, ipaddress.IPv4Network], now: float) -> None:
        """Beacon on these interfaces (each with its IPv4 subnet: only beacons from inside
        it are read); what was heard on dropped ones is forgotten."""
        wanted = set(subnets)
        self._subnets = dict(subnets)
        self.scheduler.set_interfaces(wanted, now)
        for key in [key for key in self._peers if key[1] not in wanted]:
            del self._peers[key]

    def get_timer(self) -> float | None:
        return self.scheduler.get_timer()

    def beacons_to_send(self, now: float, now_wall: float) -> list[tuple[str, bytes]]:
        """(interface, datagram) for every beacon due at ``now``."""
        return [
            (ifname, self.beacon(now_wall, solicit=solicit))
            for ifname, solicit in self.scheduler.due(now)
        ]

    def beacon(self, now_wall: float, *, solicit: bool = False) -> bytes:
        """A fresh signed beacon. Its timestamp is the wall clock in ms, but always above
        the last one sent, so that a clock stepped back does not make us a replay."""
        timestamp_ms = max(int(now_wall * 1000), self._last_timestamp_ms + 1)
        self._last_timestamp_ms = timestamp_ms
        return make_beacon(
            self.signing_key,
            mesh_id=self.mesh_id,
            quic_port=self.quic_port,
            timestamp_ms=timestamp_ms,
            solicit=solicit,
        ).encode()

    # -- receiving -----------------------------------------------------------------------

    def receive(
        self,
        data: bytes,
        source_ip: str,
        ifname: str,
        now_monotonic: float,
        now_wall: float,
    ) -> Discovered | Rejected:
        event = self._receive(data, source_ip, ifname, now_monotonic, now_wall)
        if isinstance(event, Rejected) and not event.quiet:
            reason = str(event.reason)
            self.refusals[reason] = self.refusals.get(reason, 0) + 1
        return event

    def in_subnet(self, source_ip: str, ifname: str) -> bool:
        """Whether ``source_ip`` is a host of ``ifname``'s subnet (not its network or
        broadcast address, but on a /31): the only places a beacon heard there may send
        us to."""
        subnet = self._subnets.get(ifname)
        try:
            ip = ipaddress.IPv4Address(source_ip)
        except ValueError:
            return False
        if subnet is None or ip not in subnet:
            return False
        # A /31 (RFC 3021, a point-to-point link) has no network or broadcast address.
        return subnet.prefixlen >= 31 or ip not in (
            subnet.network_address,
            subnet.broadcast_address,
        )

    def _receive(
        self,
        data: bytes,
        source_ip: str,
        ifname: str,
        now_monotonic: float,
        now_wall: float,
    ) -> Discovered | Rejected:
        # Before parsing: a beacon from outside the segment costs nothing at all.
        if not self.in_subnet(source_ip, ifname):
            return Rejected(DiscoveryReason.OFF_SUBNET, f"{source_ip} on {ifname}")
        try:
            beacon = parse_beacon(data)
        except BeaconError as exc:
            return Rejected(exc.reason, exc.message)
        # The cheap checks before the signature: a flood of foreign or looped-back beacons
        # costs no Ed25519 verify.
        if beacon.mesh_id != self.mesh_id:
            return Rejected(DiscoveryReason.OTHER_MESH, f"mesh {beacon.mesh_id.hex()}")
        if beacon.node_id == self.node_id:
            return Rejected(DiscoveryReason.OWN_BEACON)
        skew_s = beacon.timestamp_ms / 1000 - now_wall
        if self.settings.max_skew_s is not None and abs(skew_s) > self.settings.max_skew_s:
            return Rejected(
                DiscoveryReason.STALE, f"{beacon.node_id}: timestamp {skew_s:+.0f} s from ours"
            )
        key = (beacon.node_id, ifname)
        peer = self._peers.get(key)
        # Per interface: a node on two of our segments sends the same beacon on both.
        if peer is not None and beacon.timestamp_ms <= peer.timestamp_ms:
            return Rejected(
                DiscoveryReason.REPLAY,
                f"{beacon.node_id}: timestamp {beacon.timestamp_ms} <= {peer.timestamp_ms}",
            )
        try:
            beacon.verify_signature()
        except BeaconError as exc:
            return Rejected(exc.reason, f"{beacon.node_id}: {exc.message}")

        address = (source_ip, beacon.quic_port)
        new = peer is None or now_monotonic - peer.heard_at > self.settings.forget_after_s
        changed = peer is not None and not new and peer.address != address
        self._peers[key] = _Peer(address, beacon.timestamp_ms, now_monotonic)
        self._peers.move_to_end(key)
        while len(self._peers) > self.settings.max_peers:
            self._peers.popitem(last=False)
        if new or beacon.solicit:
            self.scheduler.trigger(ifname, now_monotonic)
        return Discovered(beacon.node_id, address, ifname, new, changed, beacon.solicit)

    def known(self) -> list[Discovered]:
        """Every (node, interface) heard and still held, least recently heard first."""
        return [
            Discovered(node_id, peer.address, ifname, new=False)
            for (node_id, ifname), peer in self._peers.items()
        ]

"""A neighbour as the control plane knows it (pure): where its session is, what verified of
it, the addresses to dial it at, and the link built to it.

Its session moves only through ``meshd.core.session_policy``'s transition table
(``Peer.advance``); the rest is what that session told us. It is a Babel link
(``routing``) exactly while its certificate verified, a session is up and its tunnel
carries packets; the control plane keeps that flag and turns its changes into Babel's
link up and down."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from meshd.core.control.rates import Rates
from meshd.core.endpoints import Address, format_endpoint
from meshd.core.membership import Cosigned, MeshDefinition, VerifiedMember
from meshd.core.membership.names import NameOpening
from meshd.core.routing.link_quality import LinkQuality
from meshd.core.session_policy import Credential, SessionInput, SessionState, advance


class Source(StrEnum):
    """How we came to know an address of a node."""

    BOOTSTRAP = "bootstrap"  # the config (from the invite)
    BEACON = "beacon"  # heard on a shared segment
    SHARED = "shared"  # a neighbour told us (ENDPOINTS)
    SESSION = "session"  # a session came from (or reached) it


@dataclass(frozen=True)
class LinkSpec:
    """What the node needs to build the WireGuard link to a neighbour."""

    node_id: str
    name: str
    ifname: str
    wireguard_public: bytes
    endpoint: Address  # the neighbour's underlay address and WireGuard port
    listen_port: int  # ours
    mesh_ipv4: ipaddress.IPv4Address | None = None  # the neighbour's, from its certificate


@dataclass
class Candidate:
    source: Source
    dials: int = 0


@dataclass
class Peer:
    node_id: str
    name: str
    ifname: str
    bootstrap: bool = False
    addresses: dict[Address, Candidate] = field(default_factory=dict)
    session_state: SessionState = SessionState.DOWN  # moves only by ``advance``
    session_addr: Address | None = None
    # Where it says its sessions are on its uplink's own network (behind a home router):
    # passed on, so that another node behind the same router finds it there.
    home: tuple[Address, ...] = ()
    # Its link has not carried packets yet on this session: its port is tried as it says
    # and, every LINK_GUESS_S, shifted as its NAT shifts its session's port (plane).
    link_came_up: bool = False
    link_shifted: bool = False
    link_tried_at: float | None = None
    link_guesses: int = 0
    member: VerifiedMember | None = None  # outlives a replaced session until it verifies
    verified_once: bool = False  # its certificate verified on some session: a neighbour
    credential: Credential | None = None
    wireguard_up: bool = False
    routing: bool = False  # a Babel link now
    own_port: int | None = None
    # Who certified it, when a delegate did: a delegate's members hold at most
    # ``issuer_link_limit`` of our ports (meshd.core.control.plane).
    port_issuer: str | None = None
    peer_port: int | None = None
    link: LinkSpec | None = None  # what the node was asked to build
    quality: LinkQuality | None = None  # RTT and loss over the tunnel, once it exists
    last_seen: float = 0.0
    session_since: float = 0.0
    next_dial: float = 0.0
    failed_dials: int = 0
    last_refusal: str | None = None
    # What it sent that we refused, by reason code: sessions closed and route updates
    # dropped (``meshd status`` neighbours' ``refusals``; DESIGN.md, trust).
    refusals: dict[str, int] = field(default_factory=dict)
    rates: Rates = field(default_factory=Rates)  # this session's budgets, full at its start
    clock_offset: float | None = None  # its CLOCK minus our uncorrected clock, this session
    # A newer mesh definition it sent before its certificate verified: adopted only once
    # that certificate verifies, under ours or under this one (it may add the issuer).
    held_definition: Cosigned[MeshDefinition] | None = None
    protocol: str | None = None  # the version its session up speaks (its ALPN id)
    # What it announced in CAPABILITIES that this build knows (meshd/2 on; empty before).
    features: frozenset[str] = field(default_factory=frozenset)

    def advance(self, given: SessionInput) -> None:
        """Its session's next state (ValueError: not a transition of that state)."""
        self.session_state = advance(self.session_state, given)

    @property
    def session_up(self) -> bool:
        return self.session_state is not SessionState.DOWN

    @property
    def joining(self) -> bool:
        """Its session sent JOIN_REQUEST: join-only (meshd.daemon.joins)."""
        return self.session_state is SessionState.JOINING

    def state(self, liveness: str | None) -> str:
        """What status shows of it: ``up`` only when its tunnel carries packets
        (``liveness``, the node's reading of the tunnel; None: no tunnel) and its session
        is verified and routing; a tunnel alive without a session is still connecting."""
        if liveness is not None and liveness != "up":
            return liveness
        if liveness is not None and self.routing:
            return "up"
        return "connecting" if self.session_up or not self.last_refusal else "down"

    def count_refusal(self, reason: str, things: int = 1) -> int:
        """``things`` more it sent refused for ``reason``; how many so far."""
        self.refusals[reason] = count = self.refusals.get(reason, 0) + things
        return count

    def named(self, salt: bytes, name: str) -> bool:
        """It shows its private name (NAME): taken when it opens the commitment its
        verified certificate holds (meshd.core.membership.names); False when not."""
        assert self.member is not None  # the session policy lets only the verified send it
        try:
            opening = NameOpening(name, salt)
        except ValueError:
            return False
        if not opening.opens(self.member.name):
            return False
        self.name = opening.name
        return True

    def status(self) -> dict[str, Any]:
        """Its session as ``meshd status`` shows it (a neighbour's ``control``)."""
        return {
            "session": "up" if self.session_up else "down",
            "address": format_endpoint(self.session_addr) if self.session_addr else None,
            "verified": self.member is not None,
            "routing": self.routing,
            "refusal": self.last_refusal,
            "found_by": sorted({c.source.value for c in self.addresses.values()}),
            "protocol": self.protocol,
            "features": sorted(str(f) for f in self.features),
        }

    @property
    def candidate(self) -> bool:
        """Only heard of (a beacon, which proves a key and not membership, or ENDPOINTS):
        no session, never verified, not configured. Candidates live in a small budget of
        their own (meshd.core.control.neighbours), apart from neighbours."""
        return not (self.bootstrap or self.verified_once or self.session_up or self.link)

    @property
    def is_neighbour(self) -> bool:
        """Listed as a neighbour: configured, talking to us, or holding a link; a
        candidate we were only told about is not one until a session comes up."""
        return self.bootstrap or (self.session_up and not self.joining) or self.link is not None

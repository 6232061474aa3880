"""Leaving the mesh (pure): the uplink's health, the gateway role and the exit a household
uses, as inputs with ``now`` and effects (meshd.daemon.exits is the shell; the module
docstring there tells the whole story).

The gateway side admits a verified member that asks (EXIT_REQUEST) unless its terms say
no (``admission``), meters its users' bytes into this month's totals and releases one that
reached its quota. The user side follows the control plane's choice of gateway while it
needs an exit (no uplink, or one that is down), dials it, asks once the gateway's
certificate verified, points its exit tunnel where the grant says, and checks that the
internet answers through it (meshd.core.routing.exit_check): a gateway that fails the
checks counts as refusing us (``exit_no_internet``). Both run over the one session
policy (meshd.core.session_policy, kind EXIT): the certificate first, then only the EXIT
kinds.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from nacl.signing import SigningKey

from meshd.core.control import effects as fx
from meshd.core.control.gateways import NO_INTERNET
from meshd.core.control.plane import ControlPlane
from meshd.core.errors import BadInput
from meshd.core.journal import Journal, unheard
from meshd.core.membership import VerifiedMember
from meshd.core.membership.directory import ADDRESS_IN_USE
from meshd.core.membership.names import shown
from meshd.core.proto import session as messages
from meshd.core.proto.gateway import GatewayAdvert, make_advert
from meshd.core.routing.exit_check import ExitCheck
from meshd.core.routing.uplink_health import Health, UplinkHealth
from meshd.core.session_policy import (
    Credential,
    SessionInput,
    SessionKind,
    SessionState,
    advance,
    check,
    check_membership,
    coming_up,
)

ADVERT_LIFETIME_S = 300
ADVERT_REFRESH_S = 100.0
REDIAL_S = 2.0
# Dials of the chosen gateway that gave no grant before it counts as refusing us (a gateway
# that advertises and answers nothing, or drops its sessions): another is chosen.
EXIT_DIAL_TRIES = 3
REFUSED_RETRY_S = 30.0
# A gateway whose exit fails our checks again after its refusal ran out is believed for
# twice as long each time, up to this (a gateway that drops its users' traffic for good
# costs them a failover now and then, not every 30 s); a check through it that passes
# starts again at REFUSED_RETRY_S.
NO_INTERNET_MAX_S = 480.0
VERIFY_S = 10.0
MAX_SESSIONS = 256


@dataclass(frozen=True)
class ExitTarget:
    """The gateway a user leaves by, once it granted the exit."""

    node_id: str
    wireguard_public: bytes
    endpoint: tuple[str, int]  # the gateway's mesh address and exit port


@dataclass(frozen=True)
class GatewayTerms:
    """What this node offers as a gateway (the config's ``[uplink]``), and where."""

    share: bool
    exit_port: int
    accepts_new: bool
    rate_cap_kbit: int | None
    quota_bytes: int  # a month's exit bytes per user; 0: no quota
    blocked: frozenset[str]  # by the config: always blocked
    mesh_ipv4: ipaddress.IPv4Address
    quic_port: int  # every node's exit sessions listen there


# What the exits ask of their shell, beside fx.Send, fx.Close and fx.Dial.
@dataclass(frozen=True)
class Admit:
    """Add a user's key as a peer of our exit interface, for its mesh address."""

    wireguard_public: bytes
    mesh_ipv4: ipaddress.IPv4Address


@dataclass(frozen=True)
class Grant:
    """Send ``data`` (an EXIT_GRANT) to ``node_id`` once the kernel changes asked before it
    are made. A user points its tunnel at us on the grant; its handshake, sent before its
    key is a peer of our exit interface, is dropped, and WireGuard sends the next one only
    5 s later (REKEY_TIMEOUT, the WireGuard paper 6.1): an outage of seconds, whenever our
    kernel thread is busy (creating links, applying routes) as a user fails over to us."""

    node_id: str
    data: bytes


@dataclass(frozen=True)
class Release:
    wireguard_public: bytes


@dataclass(frozen=True)
class UseExit:
    """Point our exit tunnel at ``target`` (None: leave by no gateway)."""

    target: ExitTarget | None


@dataclass(frozen=True)
class Announce:
    advert: GatewayAdvert


@dataclass(frozen=True)
class CheckUplink:
    """Run one uplink health check and give its outcome to ``uplink_checked``."""


@dataclass(frozen=True)
class CheckExit:
    """Run one check through the exit tunnel and give its outcome to ``exit_checked``."""

    gateway: str  # whose exit the tunnel points at: the outcome is that gateway's
    number: int  # the check's, since the grant (ExitCheck.started)


@dataclass(frozen=True)
class SaveBlocked:
    """The node ids blocked at run time (not the config's), to keep across restarts."""

    node_ids: tuple[str, ...]


@dataclass(frozen=True)
class ChooseGateway:
    """A gateway refused us: the control plane chooses again, now."""


Effect = (
    fx.Send
    | fx.Close
    | fx.Dial
    | Admit
    | Grant
    | Release
    | UseExit
    | Announce
    | CheckUplink
    | CheckExit
    | SaveBlocked
    | ChooseGateway
)


@dataclass
class ExitPeer:
    """A node on the other end of an exit session (either role)."""

    node_id: str
    since: float
    member: VerifiedMember | None = None
    credential: Credential | None = None
    admitted: bool = False  # gateway side: its key is a peer of our exit interface
    session_state: SessionState = SessionState.DOWN  # moves only by ``advance``

    def advance(self, given: SessionInput) -> None:
        self.session_state = advance(self.session_state, given)


class Exits:
    def __init__(
        self,
        plane: ControlPlane,
        signing_key: SigningKey,
        terms: GatewayTerms,
        health: UplinkHealth | None,  # None: no uplink of our own
        blocked: Collection[str] = (),  # at run time, from the last SaveBlocked
        journal: Journal = unheard,
        checks_exit: bool = False,  # an [exit] check_target: the exit in use is checked
    ) -> None:
        self.plane, self.signing_key, self.terms, self.health = plane, signing_key, terms, health
        self.journal, self.checks_exit = journal, checks_exit
        self.effects: list[Effect] = []
        self.peers: dict[str, ExitPeer] = {}
        self.blocked = set(terms.blocked) | set(blocked)
        self.checking = False  # a CheckUplink is out
        # Gateway role.
        self.month = ""
        self.usage: dict[str, int] = {}  # this month's exit bytes per user
        self.user_of: dict[ipaddress.IPv4Address, str] = {}  # admitted: address -> node id
        self.seqno = 0
        self.next_advert = 0.0
        self.announced: bool | None = None  # available in our last advert
        # User role.
        self.gateway: str | None = None  # the gateway we want to leave by
        self.granted: ExitTarget | None = None
        self.next_dial = 0.0
        self.ungranted_dials = 0  # of the gateway we want, since its last grant
        self.exit_check: ExitCheck | None = None  # while the exit in use is checked
        self.no_internet: dict[str, int] = {}  # gateways that failed our checks: how often
        self.strikes: dict[str, int] = {}  # the same, since a check through it last passed

    def drain(self) -> list[Effect]:
        out, self.effects = self.effects, []
        return out

    @property
    def needs_exit(self) -> bool:
        """No uplink of our own, or one that does not work (unknown counts as working)."""
        return self.health is None or self.health.state is Health.DOWN

    # ---- time ------------------------------------------------------------------------

    def tick(self, now: float, sessions: Collection[str]) -> None:
        """``sessions``: the node ids our exit transport has a session with or dials."""
        if self.health is not None:
            if self.health.expire(now):
                self._health_changed(now, sessions)
            if not self.checking and self.health.due(now):
                self.checking = True
                self.effects.append(CheckUplink())
        if self.terms.share and self.health is not None:
            # Nothing is announced before the first check says whether the uplink works.
            available = self.health.working
            known = self.health.state is not Health.UNKNOWN
            if known and (available != self.announced or now >= self.next_advert):
                self.announce(available, now)
        self._use_exit(now, sessions)
        check = self.exit_check
        if check is not None and check.due(now):
            self.effects.append(CheckExit(check.gateway, check.started))
        for peer in self.peers.values():
            if peer.member is None and now - peer.since > VERIFY_S:
                self.effects.append(fx.Close(peer.node_id, "not_verified"))
            elif peer.admitted:
                self._lost_address(peer)

    def uplink_check_lost(self) -> None:
        """The check asked for ended without a verdict (cancelled, or it failed to run):
        the next due tick asks again."""
        self.checking = False

    def uplink_checked(self, ok: bool, detail: str, now: float, sessions: Collection[str]) -> None:
        assert self.health is not None
        self.checking = False
        if self.health.result(ok, now, detail):
            self._health_changed(now, sessions)

    def exit_applied(self, gateway: str, now: float) -> None:
        """The kernel pointed the exit tunnel at ``gateway`` (a UseExit done)."""
        if self.exit_check is not None and self.exit_check.gateway == gateway:
            self.exit_check.applied(now)

    def exit_traffic(self, sent: int, heard: int, now: float) -> None:
        """The exit tunnel's packet counters (out, in), read at ``now``: traffic that goes
        unanswered puts the exit in use in doubt (meshd.core.routing.exit_check)."""
        if self.exit_check is not None:
            self.exit_check.traffic(sent, heard, now)

    def exit_check_lost(self, gateway: str) -> None:
        """A check through ``gateway``'s exit ended without a verdict."""
        if self.exit_check is not None and self.exit_check.gateway == gateway:
            self.exit_check.lost()

    def exit_checked(
        self, gateway: str, ok: bool, detail: str, now: float, number: int | None = None
    ) -> None:
        """Check ``number`` through ``gateway``'s exit answered (one for an exit we left
        since is not counted)."""
        check = self.exit_check
        if check is None or check.gateway != gateway:
            return
        failing = check.result(ok, detail, number)
        if ok:
            self.strikes.pop(gateway, None)
            # Chosen as the last resort, it works again: no longer refused.
            if self.plane.gateways.refusals.get(gateway, ("",))[0] == NO_INTERNET:
                del self.plane.gateways.refusals[gateway]
        if not failing:
            return
        self.no_internet[gateway] = self.no_internet.get(gateway, 0) + 1
        others = [
            c for c in self.plane.gateways.choice.candidates if c.usable and c.node_id != gateway
        ]
        strikes = self.strikes[gateway] = self.strikes.get(gateway, 0) + 1
        if not others:
            # Nowhere else to go: a gateway that may work beats none (the check's target
            # may be what is down). Counted, checked again, logged once until one passes.
            check.failed_in_a_row = 0
            if strikes == 1:
                self.journal(
                    "exit.no_internet", logging.WARNING, gateway=gateway[:8], detail=detail
                )
            return
        believed = min(REFUSED_RETRY_S * 2 ** (strikes - 1), NO_INTERNET_MAX_S)
        self.plane.gateways.refusals[gateway] = (NO_INTERNET, now + believed)
        self.exit_check = None
        self.effects.append(ChooseGateway())  # another gateway, now
        self.journal(
            "exit.refused",
            logging.WARNING,
            gateway=gateway[:8],
            reason=NO_INTERNET,
            detail=detail,
            believed_s=believed,
        )

    def _health_changed(self, now: float, sessions: Collection[str]) -> None:
        assert self.health is not None
        level = logging.INFO if self.health.working else logging.WARNING
        self.journal("uplink." + self.health.state.value, level, reason=self.health.reason)
        self._use_exit(now, sessions)

    # ---- gateway role ----------------------------------------------------------------

    def announce(self, available: bool, now: float) -> None:
        wall = int(self.plane.clock.now())  # the mesh's time: ours may be stale
        self.seqno = max(self.seqno + 1, wall) & 0xFFFFFFFF
        advert = make_advert(
            self.signing_key,
            mesh_id=self.plane.own.trust.mesh_id,
            mesh_ipv4=self.terms.mesh_ipv4,
            exit_port=self.terms.exit_port,
            seqno=self.seqno,
            issued_at=wall,
            lifetime_s=ADVERT_LIFETIME_S,
            available=available,
            accepts_new=self.terms.accepts_new,
            rate_cap_kbit=self.terms.rate_cap_kbit or 0,
        )
        self.effects.append(Announce(advert))
        self.announced = available
        self.next_advert = now + ADVERT_REFRESH_S

    def admission(self, peer: ExitPeer) -> str | None:
        """Why ``peer`` may not leave by us, or None."""
        if not self.terms.share:
            return "not_a_gateway"
        if not (self.health is not None and self.health.working):
            return "uplink_down"
        if peer.node_id in self.blocked:
            return "blocked"
        if self.over_quota(peer.node_id):
            return "quota_reached"
        if not self.terms.accepts_new and not peer.admitted:
            return "not_taking_new_users"
        return self._address_refusal(peer)

    def _address_refusal(self, peer: ExitPeer) -> str | None:
        """``address_in_use`` when another member holds ``peer``'s address: one certified
        first (the certificate directory: meshd.core.membership.directory), or one
        admitted here (its WireGuard peer has that allowed-ip: WireGuard would move it to
        the newcomer's, and the user's traffic with it) that still holds it; one that no
        longer does (a member certified first came since) is released first."""
        assert peer.member is not None and peer.credential is not None
        conflict = self.plane.trust.conflict(peer.credential)
        if conflict is not None:
            return conflict.reason
        holder = self.user_of.get(peer.member.mesh_ipv4)
        other = self.peers.get(holder) if holder is not None else None
        if holder == peer.node_id or other is None or not other.admitted:
            return None
        return None if self._lost_address(other) else ADDRESS_IN_USE

    def _lost_address(self, peer: ExitPeer) -> bool:
        """An admitted user whose address a member certified first holds (it came to the
        directory after the user was admitted) is released and its session closed."""
        if peer.credential is None or (c := self.plane.trust.conflict(peer.credential)) is None:
            return False
        self._release(peer, c.reason)
        self.effects.append(fx.Close(peer.node_id, c.reason))
        return True

    def _on_request(self, peer: ExitPeer) -> None:
        assert peer.member is not None
        reason = self.admission(peer)
        if reason is not None:
            user = shown(peer.member.name, peer.node_id)
            self.journal("exit.refused_user", logging.WARNING, user=user, reason=reason)
            self._send(peer.node_id, messages.ExitRefused(reason))
            return
        if not peer.admitted:
            peer.admitted = True
            self.user_of[peer.member.mesh_ipv4] = peer.node_id
            self.effects.append(Admit(peer.member.wireguard_public, peer.member.mesh_ipv4))
            self.journal(
                "exit.user_admitted",
                user=shown(peer.member.name, peer.node_id),
                address=str(peer.member.mesh_ipv4),
            )
        grant = messages.encode(messages.ExitGrant(self.terms.exit_port))
        self.effects.append(Grant(peer.node_id, grant))

    def _release(self, peer: ExitPeer, reason: str) -> None:
        if peer.admitted and peer.member is not None:
            peer.admitted = False
            self.effects.append(Release(peer.member.wireguard_public))
            user = shown(peer.member.name, peer.node_id)
            self.journal("exit.user_released", user=user, reason=reason)

    def block(self, node_id: str, blocked: bool) -> None:
        """Stop (or allow again) one neighbour's exit traffic, at once. ValueError for
        unblocking one the config blocks."""
        if not blocked and node_id in self.terms.blocked:
            raise ValueError("blocked by the config file ([uplink] blocked)")
        (self.blocked.add if blocked else self.blocked.discard)(node_id)
        self.effects.append(SaveBlocked(tuple(sorted(self.blocked - self.terms.blocked))))
        self.journal("exit.block", node=node_id[:8], blocked=blocked)
        peer = self.peers.get(node_id)
        if blocked and peer is not None:
            self._release(peer, "blocked")
            self.effects.append(fx.Close(node_id, "blocked"))

    def over_quota(self, node_id: str) -> bool:
        return bool(self.terms.quota_bytes) and self.usage.get(node_id, 0) >= self.terms.quota_bytes

    def month_is(self, month: str) -> None:
        """The month (meshd.adapters.ledger.month_of) the next counts belong to."""
        if month != self.month:
            if self.month:
                self.journal("exit.quota_month", month=month)
            self.month, self.usage = month, {}  # a new month: every quota starts again

    def by_user(self, deltas: Mapping[ipaddress.IPv4Address, int]) -> dict[str, int]:
        """The kernel's new exit bytes per source address, as bytes per admitted user."""
        out: dict[str, int] = {}
        for address, count in deltas.items():
            node_id = self.user_of.get(address)
            if node_id is not None:
                out[node_id] = out.get(node_id, 0) + count
        return out

    def metered(self, usage: Mapping[str, int]) -> None:
        """This month's totals as stored: who reached its quota is released and told."""
        self.usage = dict(usage)
        for peer in self.peers.values():
            if peer.admitted and self.over_quota(peer.node_id):
                self.journal(
                    "exit.quota_reached",
                    logging.WARNING,
                    user=shown(peer.member.name, peer.node_id) if peer.member else peer.node_id[:8],
                    bytes=self.usage.get(peer.node_id, 0),
                )
                self._release(peer, "quota_reached")
                self._send(peer.node_id, messages.ExitRefused("quota_reached"))

    # ---- user role -------------------------------------------------------------------

    def _use_exit(self, now: float, sessions: Collection[str]) -> None:
        want = self.plane.gateways.choice.selected if self.needs_exit else None
        if want != self.gateway:
            if self.gateway is not None:
                self.effects.append(fx.Close(self.gateway, "switching"))
            self.journal("exit.gateway", gateway=(want or "none")[:8], needs_exit=self.needs_exit)
            self.gateway, self.next_dial, self.ungranted_dials = want, now, 0
            self.exit_check = None  # the next grant starts the checks of the next exit
            if want is None and self.granted is not None:
                self.granted = None
                self.effects.append(UseExit(None))
        if want is None or now < self.next_dial or want in sessions:
            return
        advert = self.plane.gateways.table.adverts.get(want)
        if advert is None:
            return
        if self.ungranted_dials >= EXIT_DIAL_TRIES:
            reason = "no_exit_session"
            self.plane.gateways.refusals[want] = (reason, now + REFUSED_RETRY_S)
            self.ungranted_dials = 0
            self.effects.append(ChooseGateway())
            self.journal("exit.refused", logging.WARNING, gateway=want[:8], reason=reason)
            return
        self.ungranted_dials += 1
        self.next_dial = now + REDIAL_S
        self.effects.append(fx.Dial((str(advert.mesh_ipv4), self.terms.quic_port), want))

    def _on_grant(self, peer: ExitPeer, port: int, now: float) -> None:
        advert = self.plane.gateways.table.adverts.get(peer.node_id)
        if peer.node_id != self.gateway or peer.member is None or advert is None:
            return  # not (or no longer) the gateway we asked
        target = ExitTarget(
            peer.node_id, peer.member.wireguard_public, (str(advert.mesh_ipv4), port)
        )
        self.ungranted_dials = 0
        if self.checks_exit and target != self.granted:
            self.exit_check = ExitCheck.pending(peer.node_id)  # until exit_applied
        elif self.checks_exit and self.exit_check is None:
            self.exit_check = ExitCheck.granted(peer.node_id, now)
        if target != self.granted:
            self.granted = target
            self.effects.append(UseExit(target))
            self.journal(
                "exit.granted",
                gateway=shown(peer.member.name, peer.node_id),
                endpoint=f"{advert.mesh_ipv4}:{port}",
            )

    # ---- sessions --------------------------------------------------------------------

    def authorize(self, node_id: str) -> str | None:
        return self.plane.neighbours.admits(node_id, self.peers, MAX_SESSIONS)

    def session_up(self, node_id: str, protocol: str, now: float) -> None:
        given = coming_up(protocol)
        self.peers[node_id] = peer = ExitPeer(node_id, now)
        peer.advance(given)
        if given is SessionInput.UP_OPENING:  # first, as on neighbours'
            self._send(node_id, messages.Capabilities(messages.FEATURES))
        self.effects.append(fx.Send(node_id, self.plane.membership_message))

    def session_closed(self, node_id: str, reason: str) -> None:
        gone = self.peers.pop(node_id, None)
        if gone is not None:
            self._release(gone, reason)
        if node_id == self.gateway:
            self.journal("exit.session_down", logging.WARNING, gateway=node_id[:8], reason=reason)

    def message(self, node_id: str, data: bytes, now: float) -> None:
        peer = self.peers.get(node_id)
        if peer is None:
            return
        try:
            msg = messages.decode(data)
            check(SessionKind.EXIT, peer.session_state, msg, ())  # no exit kind needs a feature yet
            if isinstance(msg, messages.Capabilities):
                peer.advance(SessionInput.CAPABILITIES)
            elif isinstance(msg, messages.Membership):
                peer.member, peer.credential = check_membership(
                    msg, self.plane.own, peer.node_id, self.plane.clock.now()
                )
                peer.advance(SessionInput.CERTIFIED)
                if peer.node_id == self.gateway:
                    self._send(peer.node_id, messages.ExitRequest())
            elif isinstance(msg, messages.ExitRequest):
                self._on_request(peer)
            elif isinstance(msg, messages.ExitGrant):
                self._on_grant(peer, msg.wireguard_port, now)
            elif isinstance(msg, messages.ExitRefused):
                assert peer.member is not None
                self.plane.gateways.refusals[peer.node_id] = (msg.reason, now + REFUSED_RETRY_S)
                self.effects.append(ChooseGateway())  # another gateway, now
                self.journal(
                    "exit.refused",
                    logging.WARNING,
                    gateway=shown(peer.member.name, peer.node_id),
                    reason=msg.reason,
                )
        except BadInput as exc:
            self.journal(
                "exit.session_refused",
                logging.WARNING,
                peer=peer.node_id[:8],
                reason=exc.reason,
                detail=exc.message,
            )
            self.effects.append(fx.Close(peer.node_id, exc.reason))

    def _send(self, node_id: str, message: messages.SessionMessage) -> None:
        self.effects.append(fx.Send(node_id, messages.encode(message)))

"""Leaving the mesh: the uplink's health, the gateway role and the exit a household uses.

Runs in the daemon's event loop; the kernel side is meshd.adapters.net.exit_tunnel, on the kernel
thread (``submit``).

- **Uplink health.** With ``[uplink] interface`` set, a TCP check through that interface
  only (meshd.adapters.net.uplink_probe) runs every ``health_interval_s``; the verdict is
  meshd.core.routing.uplink_health's.
- **Gateway.** With ``share = true`` the node opens its exit interface and announces a
  signed GatewayAdvert (available while its uplink works, withdrawn at once when it
  stops, announced again when it recovers; refreshed well within its lifetime).
- **Exit sessions.** A household that needs an exit (no uplink, or its uplink is down)
  takes the control plane's choice of gateway, opens a QUIC session to the gateway's mesh
  address on ``[exit] quic_port`` (a transport of its own, bound to our mesh address, so
  these sessions never mix with the neighbour sessions), shows its certificate and asks
  (EXIT_REQUEST). The gateway checks the certificate and its terms, adds the user's
  WireGuard key (from the certificate) as a peer of its exit interface and answers with
  its exit port (EXIT_GRANT), or refuses with a reason (EXIT_REFUSED). The user then
  points its exit tunnel at the gateway. A user is released when its session ends.
- **Quotas.** Every few seconds the gateway reads each user's exit bytes from the kernel
  (meshd.adapters.net.exit_meter) into this month's totals in the ledger; a user at its monthly
  quota is released and refused (``quota_reached``) until the month ends, also across
  restarts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from meshd.adapters.ledger import Ledger, month_of
from meshd.adapters.net import uplink_probe
from meshd.adapters.net.exit_tunnel import ExitTarget, ExitTunnels
from meshd.adapters.quic import PeerEvent, QuicTransport
from meshd.config import ExitSettings, UplinkSettings
from meshd.core.errors import BadInput
from meshd.core.membership import VerifiedMember
from meshd.core.membership.names import shown
from meshd.core.proto import session as messages
from meshd.core.proto.gateway import make_advert
from meshd.core.routing.uplink_health import Health, UplinkHealth
from meshd.core.session_policy import (
    SessionInput,
    SessionKind,
    SessionState,
    advance,
    check,
    check_membership,
)
from meshd.core.transport.certs import NodeCredentials
from meshd.core.transport.events import MessageReceived, SessionClosed, SessionUp
from meshd.daemon.control import ControlService
from meshd.daemon.tasks import Kernel, Tasks
from meshd.log import event

ADVERT_LIFETIME_S = 300
ADVERT_REFRESH_S = 100.0
REDIAL_S = 2.0
REFUSED_RETRY_S = 30.0
VERIFY_S = 10.0
MAX_SESSIONS = 256
BLOCKED_FILE = "blocked"
METER_S = 5.0  # between readings of the exit users' byte counters
MB = 1_000_000

Submit = Callable[..., None]


@dataclass
class ExitPeer:
    """A node on the other end of an exit session (either role)."""

    node_id: str
    since: float
    member: VerifiedMember | None = None
    admitted: bool = False  # gateway side: its key is a peer of our exit interface
    session_state: SessionState = SessionState.DOWN  # moves only by ``advance``

    def advance(self, given: SessionInput) -> None:
        self.session_state = advance(self.session_state, given)


class ExitService:
    def __init__(
        self,
        node_id: str,
        credentials: NodeCredentials,
        signing_key: SigningKey,
        control: ControlService,
        tunnels: ExitTunnels,
        submit: Submit,
        kernel: Kernel,
        ledger: Ledger,
        uplink: UplinkSettings,
        settings: ExitSettings,
        mesh_ipv4: ipaddress.IPv4Address,
        state_dir: Path,
    ) -> None:
        self.node_id, self.credentials, self.signing_key = node_id, credentials, signing_key
        self.control, self.tunnels, self.submit, self.kernel = control, tunnels, submit, kernel
        self.uplink, self.settings, self.mesh_ipv4 = uplink, settings, mesh_ipv4
        self.rate_kbit = uplink.rate.kbit if uplink.rate else None
        self.rate_cap_kbit = uplink.rate_cap.kbit if uplink.rate_cap else None
        self.health = (
            UplinkHealth(uplink.health_interval_s, uplink.health_dead_after_s)
            if uplink.interface
            else None
        )
        self.tasks = Tasks("exits")
        self._checking: asyncio.Task[None] | None = None
        self.transport: QuicTransport | None = None
        self.peers: dict[str, ExitPeer] = {}
        self.blocked_file = state_dir / BLOCKED_FILE
        self.blocked = set(uplink.blocked) | _load_blocked(self.blocked_file)
        self.quota_bytes = uplink.monthly_quota_mb * MB
        self.ledger = ledger  # the node's; used on the kernel thread
        self.month = ""
        self.usage: dict[str, int] = {}  # this month's exit bytes per user
        self.user_of: dict[ipaddress.IPv4Address, str] = {}  # admitted: address -> node id
        self._metering: asyncio.Task[None] | None = None
        # Gateway role.
        self._seqno = 0
        self._next_advert = 0.0
        self._announced: bool | None = None  # available in our last advert
        # User role.
        self.gateway: str | None = None  # the gateway we want to leave by
        self.granted: ExitTarget | None = None
        self._next_dial = 0.0

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.transport = await QuicTransport.listen(
            credentials=self.credentials,
            authorize=self.authorize,
            on_event=self.on_event,
            host=str(self.mesh_ipv4),
            port=self.settings.quic_port,
            settings=self.control.session_settings,  # the node's versions
        )
        if self.uplink.share:
            self.submit(
                self.tunnels.open_gateway,
                self.uplink.interface,
                self.rate_kbit,
                self.rate_cap_kbit,
            )
            self.month = month_of(time.time())
            self.usage = await self.kernel(self.ledger.exit_usage, self.month)
            self._metering = self.tasks.spawn(self._meter_loop())
        event("exit.listening", port=self.settings.quic_port, sharing=self.uplink.share)

    async def close(self) -> None:
        if self.uplink.share and self._announced:
            self._announce(False, time.monotonic())  # neighbours move their users now
        await self.tasks.cancel()  # the health check and the meter loop
        if self._metering is not None:
            try:
                await self._meter()  # the last bytes, before the tunnels go
            except (OSError, ValueError) as exc:
                event("exit.meter_failed", logging.WARNING, error=str(exc))
        if self.transport is not None:
            await self.transport.close("shutdown")

    # ---- time ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if self.health is not None:
            if self.health.expire(now):
                self._health_changed()
            if self._checking is None and self.health.due(now):
                self._checking = self.tasks.spawn(self._check())
        if self.uplink.share and self.health is not None:
            # Nothing is announced before the first check says whether the uplink works.
            available = self.health.working
            known = self.health.state is not Health.UNKNOWN
            if known and (available != self._announced or now >= self._next_advert):
                self._announce(available, now)
        self._use_exit(now)
        for peer in list(self.peers.values()):
            if peer.member is None and now - peer.since > VERIFY_S and self.transport:
                self.transport.close_peer(peer.node_id, "not_verified")

    async def _check(self) -> None:
        assert self.health is not None and self.uplink.health_target is not None
        host, port = self.uplink.health_target
        try:
            ok, detail = await uplink_probe.check(
                self.uplink.interface, host, port, self.uplink.health_dead_after_s
            )
        finally:
            self._checking = None
        if self.health.result(ok, time.monotonic(), detail):
            self._health_changed()

    def _health_changed(self) -> None:
        assert self.health is not None
        level = logging.INFO if self.health.working else logging.WARNING
        event("uplink." + self.health.state.value, level, reason=self.health.reason)
        self._use_exit(time.monotonic())

    @property
    def needs_exit(self) -> bool:
        """No uplink of our own, or one that does not work (unknown counts as working)."""
        return self.health is None or self.health.state is Health.DOWN

    # ---- gateway role ----------------------------------------------------------------

    def _announce(self, available: bool, now: float) -> None:
        wall = int(self.control.core.clock.now())  # the mesh's time: ours may be stale
        self._seqno = max(self._seqno + 1, wall) & 0xFFFFFFFF
        advert = make_advert(
            self.signing_key,
            mesh_id=self.control.core.own.trust.mesh_id,
            mesh_ipv4=self.mesh_ipv4,
            exit_port=self.uplink.exit_port,
            seqno=self._seqno,
            issued_at=wall,
            lifetime_s=ADVERT_LIFETIME_S,
            available=available,
            accepts_new=self.uplink.accepts_new,
            rate_cap_kbit=self.rate_cap_kbit or 0,
        )
        self.control.originate_gateway(advert)
        self._announced = available
        self._next_advert = now + ADVERT_REFRESH_S

    def _admission(self, peer: ExitPeer) -> str | None:
        """Why ``peer`` may not leave by us, or None."""
        if not self.uplink.share:
            return "not_a_gateway"
        if not (self.health is not None and self.health.working):
            return "uplink_down"
        if peer.node_id in self.blocked:
            return "blocked"
        if self._over_quota(peer.node_id):
            return "quota_reached"
        if not self.uplink.accepts_new and not peer.admitted:
            return "not_taking_new_users"
        return None

    def _on_request(self, peer: ExitPeer) -> None:
        assert peer.member is not None
        reason = self._admission(peer)
        if reason is not None:
            event(
                "exit.refused_user",
                logging.WARNING,
                user=shown(peer.member.name, peer.node_id),
                reason=reason,
            )
            self._send(peer.node_id, messages.ExitRefused(reason))
            return
        if not peer.admitted:
            peer.admitted = True
            self.user_of[peer.member.mesh_ipv4] = peer.node_id
            self.submit(self.tunnels.admit, peer.member.wireguard_public, peer.member.mesh_ipv4)
            event(
                "exit.user_admitted",
                user=shown(peer.member.name, peer.node_id),
                address=str(peer.member.mesh_ipv4),
            )
        self._send(peer.node_id, messages.ExitGrant(self.uplink.exit_port))

    def _release(self, peer: ExitPeer, reason: str) -> None:
        if peer.admitted and peer.member is not None:
            peer.admitted = False
            self.submit(self.tunnels.release, peer.member.wireguard_public)
            event("exit.user_released", user=shown(peer.member.name, peer.node_id), reason=reason)

    def block(self, node_id: str, blocked: bool) -> None:
        """Stop (or allow again) one neighbour's exit traffic, at once; kept across
        restarts (``state_dir/blocked``). The config's ``blocked`` list always applies."""
        if not blocked and node_id in self.uplink.blocked:
            raise ValueError("blocked by the config file ([uplink] blocked)")
        (self.blocked.add if blocked else self.blocked.discard)(node_id)
        extra = sorted(self.blocked - set(self.uplink.blocked))
        tmp = self.blocked_file.with_suffix(".tmp")
        tmp.write_text("".join(f"{n}\n" for n in extra))
        os.replace(tmp, self.blocked_file)
        event("exit.block", node=node_id[:8], blocked=blocked)
        peer = self.peers.get(node_id)
        if blocked and peer is not None:
            self._release(peer, "blocked")
            if self.transport is not None:
                self.transport.close_peer(node_id, "blocked")

    def _over_quota(self, node_id: str) -> bool:
        return bool(self.quota_bytes) and self.usage.get(node_id, 0) >= self.quota_bytes

    async def _meter_loop(self) -> None:
        while True:
            await asyncio.sleep(METER_S)
            try:
                await self._meter()
            except (OSError, ValueError) as exc:  # nft failed or the ledger: next time
                event("exit.meter_failed", logging.WARNING, error=str(exc))

    async def _meter(self) -> None:
        """Read the kernel's counts into this month's totals; cut off who reached its quota."""
        deltas = await self.kernel(self.tunnels.usage)
        by_user: dict[str, int] = {}
        for address, count in deltas.items():
            node_id = self.user_of.get(address)
            if node_id is not None:
                by_user[node_id] = by_user.get(node_id, 0) + count
        month = month_of(time.time())
        if month != self.month:
            self.month, self.usage = month, {}  # a new month: every quota starts again
            event("exit.quota_month", month=month)
        if by_user:
            self.usage = await self.kernel(self.ledger.add_exit_usage, month, by_user)
        for peer in list(self.peers.values()):
            if peer.admitted and self._over_quota(peer.node_id):
                event(
                    "exit.quota_reached",
                    logging.WARNING,
                    user=shown(peer.member.name, peer.node_id) if peer.member else peer.node_id[:8],
                    bytes=self.usage.get(peer.node_id, 0),
                )
                self._release(peer, "quota_reached")
                self._send(peer.node_id, messages.ExitRefused("quota_reached"))

    # ---- user role -------------------------------------------------------------------

    def _use_exit(self, now: float) -> None:
        want = self.control.core.gateways.choice.selected if self.needs_exit else None
        if want != self.gateway:
            if self.gateway is not None and self.transport is not None:
                self.transport.close_peer(self.gateway, "switching")
            event("exit.gateway", gateway=(want or "none")[:8], needs_exit=self.needs_exit)
            self.gateway, self._next_dial = want, now
            if want is None and self.granted is not None:
                self.granted = None
                self.submit(self.tunnels.use, None, self.mesh_ipv4)
        if want is None or self.transport is None or now < self._next_dial:
            return
        if want in self.transport.peers():
            return
        advert = self.control.core.gateways.table.adverts.get(want)
        if advert is None:
            return
        self._next_dial = now + REDIAL_S
        self.transport.dial((str(advert.mesh_ipv4), self.settings.quic_port), want)

    def _on_grant(self, peer: ExitPeer, port: int) -> None:
        advert = self.control.core.gateways.table.adverts.get(peer.node_id)
        if peer.node_id != self.gateway or peer.member is None or advert is None:
            return  # not (or no longer) the gateway we asked
        target = ExitTarget(
            peer.node_id, peer.member.wireguard_public, (str(advert.mesh_ipv4), port)
        )
        if target != self.granted:
            self.granted = target
            self.submit(self.tunnels.use, target, self.mesh_ipv4)
            event(
                "exit.granted",
                gateway=shown(peer.member.name, peer.node_id),
                endpoint=f"{advert.mesh_ipv4}:{port}",
            )

    # ---- sessions --------------------------------------------------------------------

    def authorize(self, node_id: str) -> str | None:
        return self.control.core.neighbours.admits(node_id, self.peers, MAX_SESSIONS)

    def on_event(self, ev: PeerEvent) -> None:
        node_id = ev.peer_node_id or ""
        now = time.monotonic()
        if isinstance(ev.event, SessionUp) and node_id:
            opening = ev.event.protocol in messages.WITH_CAPABILITIES
            self.peers[node_id] = peer = ExitPeer(node_id, now)
            peer.advance(SessionInput.UP_OPENING if opening else SessionInput.UP)
            if opening:  # first, as on neighbours'
                self._send(node_id, messages.Capabilities(messages.FEATURES))
            self._send_raw(node_id, self.control.core.membership_message)
        elif isinstance(ev.event, MessageReceived) and node_id in self.peers:
            self._on_message(self.peers[node_id], ev.event.data)
        elif isinstance(ev.event, SessionClosed) and ev.was_up:
            gone = self.peers.pop(node_id, None)
            if gone is not None:
                self._release(gone, ev.event.reason)
            if node_id == self.gateway:
                event(
                    "exit.session_down",
                    logging.WARNING,
                    gateway=node_id[:8],
                    reason=ev.event.reason,
                )

    def _on_message(self, peer: ExitPeer, data: bytes) -> None:
        try:
            msg = messages.decode(data)
            check(SessionKind.EXIT, peer.session_state, msg, ())  # no exit kind needs a feature yet
            if isinstance(msg, messages.Capabilities):
                peer.advance(SessionInput.CAPABILITIES)
            elif isinstance(msg, messages.Membership):
                peer.member, _ = check_membership(
                    msg, self.control.core.own, peer.node_id, self.control.core.clock.now()
                )
                peer.advance(SessionInput.CERTIFIED)
                if peer.node_id == self.gateway:
                    self._send(peer.node_id, messages.ExitRequest())
            elif isinstance(msg, messages.ExitRequest):
                self._on_request(peer)
            elif isinstance(msg, messages.ExitGrant):
                self._on_grant(peer, msg.wireguard_port)
            elif isinstance(msg, messages.ExitRefused):
                assert peer.member is not None
                until = time.monotonic() + REFUSED_RETRY_S
                self.control.core.gateways.refusals[peer.node_id] = (msg.reason, until)
                self.control.choose_gateway()  # another gateway, now
                event(
                    "exit.refused",
                    logging.WARNING,
                    gateway=shown(peer.member.name, peer.node_id),
                    reason=msg.reason,
                )
        except BadInput as exc:
            self._close(peer, exc.reason, exc.message)

    def _close(self, peer: ExitPeer, reason: str, detail: str) -> None:
        event(
            "exit.session_refused",
            logging.WARNING,
            peer=peer.node_id[:8],
            reason=reason,
            detail=detail,
        )
        if self.transport is not None:
            self.transport.close_peer(peer.node_id, reason)

    def _send(self, node_id: str, message: messages.SessionMessage) -> None:
        self._send_raw(node_id, messages.encode(message))

    def _send_raw(self, node_id: str, data: bytes) -> None:
        if self.transport is not None and (why := self.transport.try_send(node_id, data)):
            event("exit.send_failed", logging.DEBUG, peer=node_id[:8], error=why)

    # ---- status ----------------------------------------------------------------------

    def status(self, now: float) -> dict[str, Any]:
        health = self.health
        using = "exit" if self.granted else ("own_uplink" if not self.needs_exit else "none")
        return {
            "uplink": None
            if health is None
            else {
                "interface": self.uplink.interface,
                "state": health.state.value,
                "reason": health.reason,
                "since_s": round(now - health.since, 1) if health.since else None,
            },
            "using": using,
            "exit_gateway": self.granted.node_id if self.granted else None,
            "sharing": None
            if not self.uplink.share
            else {
                "announced": bool(self._announced),
                "rate_cap_kbit": self.rate_cap_kbit,
                "accepts_new": self.uplink.accepts_new,
                "users": sorted(  # a private name shows as "node" and the id's start
                    shown(p.member.name, p.node_id)
                    for p in self.peers.values()
                    if p.admitted and p.member
                ),
                "blocked": sorted(self.blocked),
                "monthly_quota_mb": self.uplink.monthly_quota_mb or None,
                "month": self.month,
                "exit_bytes": dict(sorted(self.usage.items())),
            },
        }


def _load_blocked(path: Path) -> set[str]:
    """Node ids blocked at run time (one per line); a line that is not one is skipped."""
    from meshd.adapters.identity import public_from_node_id

    try:
        lines = path.read_text().split()
    except FileNotFoundError:
        return set()
    out = set()
    for line in lines:
        try:
            public_from_node_id(line)
        except ValueError:
            event("exit.blocked_unreadable", logging.WARNING, line=line[:60])
            continue
        out.add(line)
    return out

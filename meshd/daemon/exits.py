"""Leaving the mesh: the uplink's health, the gateway role and the exit a household uses.

The shell of meshd.core.exits (which decides) in the daemon's event loop; the kernel side
is meshd.adapters.net.exit_tunnel, on the kernel thread (``submit``).

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
  WireGuard key (from the certificate) as a peer of its exit interface and, once the
  kernel has it, answers with its exit port (EXIT_GRANT), or refuses with a reason
  (EXIT_REFUSED). The user then points its exit tunnel at the gateway. A user is
  released when its session ends.
- **Exit checks.** While it leaves by a gateway, a household with a check target
  (``[exit] check_target``, else ``[uplink] health_target``) makes the uplink's kind of
  check through the exit tunnel's interface only, once after each grant and twice a
  second while what the tunnel sends goes unanswered (its packet counters, read each
  tick: meshd.core.routing.exit_check); a gateway that fails two in a row counts as refusing
  it (``exit_no_internet``) and another is chosen at once.
- **Quotas.** Every few seconds the gateway reads each user's exit bytes from the kernel
  (meshd.adapters.net.exit_meter) into this month's totals, saved in the ledger once a
  minute (SD cards) and at stop; a user at its monthly quota is released and refused
  (``quota_reached``) until the month ends, also across restarts.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from meshd.adapters.ledger import Ledger, month_of
from meshd.adapters.net import if_stats, uplink_probe
from meshd.adapters.net.exit_tunnel import ExitTunnels
from meshd.adapters.quic import PeerEvent, QuicTransport
from meshd.adapters.trust import write_atomically
from meshd.config import ExitSettings, UplinkSettings
from meshd.core import exits as core
from meshd.core.control import effects as fx
from meshd.core.endpoints import Address
from meshd.core.keys import public_from_node_id
from meshd.core.membership.names import shown
from meshd.core.routing.exit_check import EXIT_CHECK_TIMEOUT_S, NO_CHECKS
from meshd.core.routing.uplink_health import UplinkHealth
from meshd.core.transport.certs import NodeCredentials
from meshd.core.transport.events import MessageReceived, SessionClosed, SessionUp
from meshd.daemon.control import ControlService
from meshd.daemon.tasks import Kernel, Tasks
from meshd.log import event

BLOCKED_FILE = "blocked"
METER_S = 5.0  # between readings of the exit users' byte counters
# Between saves of what they read: a commit every reading, while anyone left by this
# gateway, was 12 an hour in the ledger's WAL for nothing an SD card could keep better. A
# crash loses at most this much of the month's counts, as the links' totals (metering.py),
# never those of a user at its quota (saved at once: the refusal must outlive a crash).
SAVE_USAGE_S = 60.0
MB = 1_000_000

Submit = Callable[..., None]


class ExitService:
    def __init__(
        self,
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
        self.credentials, self.control, self.tunnels = credentials, control, tunnels
        self.submit, self.kernel, self.ledger = submit, kernel, ledger  # ledger: kernel thread
        self.uplink, self.settings, self.mesh_ipv4 = uplink, settings, mesh_ipv4
        self.rate_kbit = uplink.rate.kbit if uplink.rate else None
        terms = core.GatewayTerms(
            share=uplink.share,
            exit_port=uplink.exit_port,
            accepts_new=uplink.accepts_new,
            rate_cap_kbit=uplink.rate_cap.kbit if uplink.rate_cap else None,
            quota_bytes=uplink.monthly_quota_mb * MB,
            blocked=frozenset(uplink.blocked),
            mesh_ipv4=mesh_ipv4,
            quic_port=settings.quic_port,
        )
        health = (
            UplinkHealth(uplink.health_interval_s, uplink.health_dead_after_s)
            if uplink.interface
            else None
        )
        self.blocked_file = state_dir / BLOCKED_FILE
        # Beyond the exit tunnel: the uplink's target, as the gateways check theirs.
        self.check_target: Address | None = settings.check_target or uplink.health_target
        self.core = core.Exits(
            control.core,
            signing_key,
            terms,
            health,
            _load_blocked(self.blocked_file),
            event,
            checks_exit=self.check_target is not None,
        )
        self.tasks = Tasks("exits")
        self.transport: QuicTransport | None = None
        self._metering: asyncio.Task[None] | None = None
        self._unsaved: dict[str, int] = {}  # this month's bytes per user, counted, not saved
        self._usage_saved = time.monotonic()

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.transport = await QuicTransport.listen(
            credentials=self.credentials,
            authorize=self.core.authorize,
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
                self.core.terms.rate_cap_kbit,
            )
            month = month_of(time.time())
            self.core.month_is(month)
            self.core.metered(await self.kernel(self.ledger.exit_usage, month))
            self._run()
            self._metering = self.tasks.spawn(self._meter_loop())
        event("exit.listening", port=self.settings.quic_port, sharing=self.uplink.share)

    async def close(self) -> None:
        if self.uplink.share and self.core.announced:
            self.core.announce(False, time.monotonic())  # neighbours move their users now
            self._run()
        await self.tasks.cancel()  # the health check and the meter loop
        if self._metering is not None:
            try:
                await self._meter(save=True)  # the last bytes, before the tunnels go
            except (OSError, ValueError) as exc:
                event("exit.meter_failed", logging.WARNING, error=str(exc))
        if self.transport is not None:
            await self.transport.close("shutdown")

    # ---- inputs ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if self.core.exit_check is not None:
            counted = if_stats.packets(self.tunnels.user_if)
            if counted is not None:
                self.core.exit_traffic(*counted, now)
        self.core.tick(now, self._sessions())
        self._run()

    def block(self, node_id: str, blocked: bool) -> None:
        """Stop (or allow again) one neighbour's exit traffic, at once; kept across
        restarts (``state_dir/blocked``). The config's ``blocked`` list always applies."""
        self.core.block(node_id, blocked)
        self._run()

    def on_event(self, ev: PeerEvent) -> None:
        node_id = ev.peer_node_id or ""
        if isinstance(ev.event, SessionUp) and node_id:
            self.core.session_up(node_id, ev.event.protocol, time.monotonic())
        elif isinstance(ev.event, MessageReceived):
            self.core.message(node_id, ev.event.data, time.monotonic())
        elif isinstance(ev.event, SessionClosed) and ev.was_up:
            self.core.session_closed(node_id, ev.event.reason)
        self._run()

    def _sessions(self) -> Collection[str]:
        return self.transport.peers() if self.transport is not None else ()

    async def _check(self) -> None:
        assert self.uplink.health_target is not None  # the config's check: with an interface
        host, port = self.uplink.health_target
        try:
            ok, detail = await uplink_probe.check(
                self.uplink.interface, host, port, self.uplink.health_dead_after_s
            )
        except BaseException:
            self.core.uplink_check_lost()
            raise
        self.core.uplink_checked(ok, detail, time.monotonic(), self._sessions())
        self._run()

    async def _check_exit(self, gateway: str, number: int) -> None:
        """One TCP connection to the check target through the exit tunnel's interface only
        (SO_BINDTODEVICE): it cannot succeed by any other way out."""
        assert self.check_target is not None
        host, port = self.check_target
        try:
            ok, detail = await uplink_probe.check(
                self.tunnels.user_if, host, port, EXIT_CHECK_TIMEOUT_S
            )
        except BaseException:
            self.core.exit_check_lost(gateway)
            raise
        self.core.exit_checked(gateway, ok, detail, time.monotonic(), number)
        self._run()

    def _exit_applied(self, gateway: str) -> None:
        self.core.exit_applied(gateway, time.monotonic())
        self._run()

    async def _meter_loop(self) -> None:
        while True:
            await asyncio.sleep(METER_S)
            try:
                await self._meter()
            except (OSError, ValueError) as exc:  # nft failed or the ledger: next time
                event("exit.meter_failed", logging.WARNING, error=str(exc))

    async def _meter(self, save: bool = False) -> None:
        """Read the kernel's counts into this month's totals (saved every SAVE_USAGE_S, at
        once for a user at its quota, at a month's end and at close); the core cuts off who
        reached its quota."""
        await self.kernel(self.tunnels.watch_uplink)
        deltas = await self.kernel(self.tunnels.usage)
        month = month_of(time.time())
        if month != self.core.month:
            await self._save_usage()  # the old month's last counts are the old month's
        self.core.month_is(month)
        by_user = self.core.by_user(deltas)
        usage = dict(self.core.usage)
        for node_id, count in by_user.items():
            usage[node_id] = usage.get(node_id, 0) + count
            self._unsaved[node_id] = self._unsaved.get(node_id, 0) + count
        quota = self.core.terms.quota_bytes
        over = quota and any(usage.get(node_id, 0) >= quota for node_id in self._unsaved)
        if save or over or time.monotonic() - self._usage_saved >= SAVE_USAGE_S:
            await self._save_usage()  # a refusal for the quota is on disk before it is made
        elif by_user:
            self.core.metered(usage)
        self._run()

    async def _save_usage(self) -> None:
        """What was counted since the last save, added to the month's row in one commit
        (kept to try again when the ledger cannot take it)."""
        self._usage_saved = time.monotonic()
        if self._unsaved:
            unsaved = self._unsaved
            stored = await self.kernel(self.ledger.add_exit_usage, self.core.month, unsaved)
            self._unsaved = {}
            self.core.metered(stored)

    # ---- effects ---------------------------------------------------------------------

    def _run(self) -> None:
        for effect in self.core.drain():
            self._do(effect)

    def _do(self, effect: core.Effect) -> None:
        transport = self.transport
        if isinstance(effect, fx.Send):
            if transport is not None and (why := transport.try_send(effect.node_id, effect.data)):
                event("exit.send_failed", logging.DEBUG, peer=effect.node_id[:8], error=why)
        elif isinstance(effect, fx.Close):
            if transport is not None:
                transport.close_peer(effect.node_id, effect.reason)
        elif isinstance(effect, fx.Dial):
            if transport is not None:
                transport.dial(effect.address, effect.node_id)
        elif isinstance(effect, core.Admit):
            self.submit(self.tunnels.admit, effect.wireguard_public, effect.mesh_ipv4)
        elif isinstance(effect, core.Grant):
            # Behind the admissions on the kernel thread, then back on the loop to go.
            send = fx.Send(effect.node_id, effect.data)
            self.submit(asyncio.get_running_loop().call_soon_threadsafe, self._do, send)
        elif isinstance(effect, core.Release):
            self.submit(self.tunnels.release, effect.wireguard_public)
        elif isinstance(effect, core.UseExit):
            self.submit(self.tunnels.use, effect.target, self.mesh_ipv4)
            if effect.target is not None:
                # Next on the kernel thread, so once the tunnel points there (the thread
                # may be busy for seconds): its checks start.
                loop = asyncio.get_running_loop()
                self.submit(loop.call_soon_threadsafe, self._exit_applied, effect.target.node_id)
        elif isinstance(effect, core.Announce):
            self.control.originate_gateway(effect.advert)
        elif isinstance(effect, core.CheckUplink):
            self.tasks.spawn(self._check())
        elif isinstance(effect, core.CheckExit):
            self.tasks.spawn(self._check_exit(effect.gateway, effect.number))
        elif isinstance(effect, core.SaveBlocked):
            blocked = "".join(f"{n}\n" for n in effect.node_ids)
            write_atomically(self.blocked_file, blocked.encode())
        elif isinstance(effect, core.ChooseGateway):
            self.control.choose_gateway()

    # ---- status ----------------------------------------------------------------------

    @property
    def needs_exit(self) -> bool:
        return self.core.needs_exit

    def status(self, now: float) -> dict[str, Any]:
        health, c = self.core.health, self.core
        counted = if_stats.transferred(self.uplink.interface) if health is not None else None
        rx, tx = counted or (None, None)
        using = "exit" if c.granted else ("own_uplink" if not c.needs_exit else "none")
        return {
            "uplink": None
            if health is None
            else {
                "interface": self.uplink.interface,
                "state": health.state.value,
                "reason": health.reason,
                "since_s": round(now - health.since, 1) if health.since else None,
                # Its interface's byte counters (sysfs): the dashboard's uplink rates.
                "rx_bytes": rx,
                "tx_bytes": tx,
            },
            "using": using,
            "exit_gateway": c.granted.node_id if c.granted else None,
            "exit_check": None
            if self.check_target is None
            else {
                "target": f"{self.check_target[0]}:{self.check_target[1]}",
                **(c.exit_check.status() if c.exit_check else NO_CHECKS),
                "no_internet": dict(sorted(c.no_internet.items())),
            },
            "sharing": None
            if not self.uplink.share
            else {
                "announced": bool(c.announced),
                "rate_cap_kbit": c.terms.rate_cap_kbit,
                "accepts_new": self.uplink.accepts_new,
                "users": sorted(  # a private name shows as "node" and the id's start
                    shown(p.member.name, p.node_id)
                    for p in c.peers.values()
                    if p.admitted and p.member
                ),
                "blocked": sorted(c.blocked),
                "monthly_quota_mb": self.uplink.monthly_quota_mb or None,
                "month": c.month,
                "exit_bytes": dict(sorted(c.usage.items())),
            },
        }


def _load_blocked(path: Path) -> set[str]:
    """Node ids blocked at run time (one per line); a line that is not one is skipped."""
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

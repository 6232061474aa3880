"""This node's own certificate, renewed before it expires (the rules are in
meshd.core.membership.renewal).

Once the node's certificate is due (``renew_at``), a node that can issue its own address
(an admin, or a delegate whose pool holds it) renews it itself; any other asks its
verified neighbours in turn, one RENEW_REQUEST every ``renew_retry_s`` on the neighbour
session (its current certificate and chain). A neighbour that can issue that address
answers RENEW_GRANTED or RENEW_REFUSED; one that cannot forwards the request, as a
bootstrap node forwards a join, over a relay session to the certificate's issuer, or else
an admin, whichever Babel has a route to, and relays the answer. The node checks the grant
(``accept_renewal``: the same identity, a later end), stores it (``trust.save_joined``:
each file atomically, the same names; the definition and chain as they are) and uses it at
once: ControlPlane.renewed sends it on every verified session as a second MEMBERSHIP, so
neighbours see it without a reconnect. A grant from another delegate is refused by a node
that holds a delegation of its own: ``delegation.cert`` holds one or the other (the chain,
or what it may issue).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshd.adapters import trust
from meshd.config import MembershipSettings
from meshd.core import session_policy as policy
from meshd.core.membership import MembershipError, OwnMembership
from meshd.core.membership.renewal import (
    RenewalError,
    RenewalIssuer,
    RenewalReason,
    accept_renewal,
    renew_at,
)
from meshd.core.proto import session as messages
from meshd.daemon.control import ControlService
from meshd.daemon.tasks import Kernel
from meshd.log import event

RenewAnswer = messages.RenewGranted | messages.RenewRefused


@dataclass
class RenewalState:
    """Where this node's own renewal stands (``meshd status``: ``membership``)."""

    state: str = "valid"  # valid, due, asking, renewed, refused
    asking: str | None = None  # the neighbour asked last
    asked_at: float = 0.0  # monotonic
    asked: int = 0  # requests sent since the certificate became due
    last_refusal: str | None = None
    renewed_at: float | None = None  # wall clock, the last renewal


class OwnRenewal:
    def __init__(
        self,
        node_id: str,
        control: ControlService,
        state_dir: Path,
        kernel: Kernel,
        settings: MembershipSettings,
        issuer: Callable[[], RenewalIssuer],
        renew_for: Callable[[messages.RenewRequest, str | None], RenewAnswer],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self.node_id, self.control, self.kernel = node_id, control, kernel
        self.state_dir, self.settings = state_dir, settings
        self.issuer = issuer  # what this node may issue (an admin, a delegate)
        self.renew_for = renew_for  # issuing here (meshd.daemon.joins)
        self.spawn = spawn
        self.state = RenewalState()

    def tick(self, now: float) -> None:
        """Ask (or issue ourselves) once the certificate is due, again every renew_retry_s."""
        own, state = self.control.core.own, self.state
        if self.control.core.clock.now() < renew_at(own.certificate, self.settings.renew_margin_s):
            if state.state not in ("renewed", "valid"):
                state.state = "valid"
            return
        if state.asking is not None and now - state.asked_at < self.settings.renew_retry_s:
            return
        if state.state in ("valid", "renewed"):
            state.state = "due"
            state.asked = 0
            event("renewal.due", expires_at=own.certificate.expires_at)
        request = messages.RenewRequest(
            own.certificate.encode(), b"".join(d.encode() for d in own.chain)
        )
        state.asked_at = now
        if self.issuer().covers(own.certificate):
            state.asking = self.node_id
            self.spawn(self._install(self.node_id, self.renew_for(request, self.node_id)))
            return
        members = sorted(
            p.node_id for p in self.control.core.peers.values() if p.member is not None
        )
        if not members:
            state.asking = None
            return
        after = [m for m in members if state.asking is not None and m > state.asking]
        state.asking = (after or members)[0]
        state.asked += 1
        state.state = "asking"
        event("renewal.asking", neighbour=state.asking[:8], attempt=state.asked)
        self.control.send_to_member(state.asking, request)

    def on_answer(self, node_id: str, msg: RenewAnswer) -> None:
        """A neighbour's answer to our request (or a late one, ignored)."""
        if node_id != self.state.asking:
            return  # not asked, or answered after we moved on
        self.spawn(self._install(node_id, msg))

    async def _install(self, node_id: str, msg: RenewAnswer) -> None:
        """Check a grant, store it, use it; or note the refusal (the next neighbour is asked
        at the next retry)."""
        state, own = self.state, self.control.core.own
        if isinstance(msg, messages.RenewRefused):
            state.last_refusal = f"{msg.reason}: {msg.detail}" if msg.detail else msg.reason
            state.state = "refused"
            event(
                "renewal.refused",
                logging.WARNING,
                by=node_id[:8],
                reason=msg.reason,
                detail=msg.detail,
            )
            return
        try:
            cert, chain = policy.decode_credential(msg)
            chain = chain if cert.issuer not in own.trust.admins else ()
            member = accept_renewal(
                own.certificate,
                cert,
                chain,
                own.trust,
                self.control.core.clock.now(),
                self.settings.clock_tolerance_s,
            )
            ours = own.delegation  # what this node may issue, or the chain of its certificate
            if chain and ours is not None and ours.delegate == self.node_id and chain[0] != ours:
                raise RenewalError(
                    RenewalReason.CANNOT_ISSUE,
                    "issued by a delegate; this node keeps its own delegation",
                )
        except (MembershipError, RenewalError) as exc:
            state.last_refusal, state.state = f"{exc.reason}: {exc.message}", "refused"
            event("renewal.bad_grant", logging.WARNING, by=node_id[:8], reason=str(exc))
            return
        delegation = chain[0] if chain else None
        try:
            await self.kernel(
                trust.save_joined, self.state_dir, own.trust.signed_definition, cert, delegation
            )
        except OSError as exc:
            state.last_refusal, state.state = f"not_stored: {exc}", "refused"
            event("renewal.not_stored", logging.ERROR, error=str(exc))
            return
        kept = delegation if delegation is not None else own.delegation
        held = self.control.core.own.trust  # a newer mesh definition may have come meanwhile
        self.control.renewed(OwnMembership(held, cert, tuple(chain), kept, member))
        state.asking, state.state, state.last_refusal = None, "renewed", None
        state.renewed_at = self.control.core.clock.now()
        event(
            "renewal.renewed",
            by=node_id[:8],
            issuer=cert.issuer[:8],
            valid_until=member.valid_until,
        )

    def status(self) -> dict[str, Any]:
        """``meshd status``'s ``membership``: our certificate's window and its renewal."""
        cert, state = self.control.core.own.certificate, self.state
        return {
            "expires_at": cert.expires_at,
            "not_before": cert.not_before,
            "issuer": cert.issuer,
            "serial": cert.serial,
            "renew_at": renew_at(cert, self.settings.renew_margin_s),
            "renewal": state.state,
            "asking": state.asking,
            "asked": state.asked,
            "last_refusal": state.last_refusal,
            "renewed_at": state.renewed_at,
        }

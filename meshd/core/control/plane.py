"""The control plane: finding neighbours, QUIC sessions with them, membership, links, Babel.

Sans-IO (the model is aioquic's ``QuicConnection``): its inputs are method calls that
carry ``now`` (the monotonic clock; the wall clock is ``MeshClock``'s, read through the
function the shell gives it), its outputs are effects (meshd.core.control.effects) that
the shell, ``meshd.daemon.control``, takes with ``drain`` and does: sends, closes and
dials on the QUIC transport, probes, links, routes, files. Where a neighbour's session is
moves only through the session policy's transition table (``Peer.advance``).

Neighbours are found three ways: bootstrap peers from the config (dialled for as long as
the node runs), signed beacons heard on a shared segment (``discovered``), and the
endpoints verified neighbours tell us about (``ENDPOINTS``; a few tries each). Each
neighbour gets one QUIC session (both ends dial while they have none; the transport keeps
one when both succeed). Each side's first message is its membership certificate; until it
verifies against the mesh definition nothing else from the session is read. Then each side
tells the other its WireGuard port for their link (``LINK``): the peer's WireGuard key is
in its certificate and its address is where the session comes from, so that is all a side
needs to build the link (``EnsureLink``).

A node that has no certificate yet may send one thing instead: JOIN_REQUEST, its invite
and new keys (meshd.daemon.joins). Such a session is join-only: the request goes out as
``JoinRequest`` to the join service, which answers through ``answer_join``; any other
message closes the session, it is never listed as a neighbour, and it is closed
``JOIN_S`` after it came up.

Timers run on the monotonic clock (``now``); certificates and revocations are checked
against the mesh's wall clock (``MeshClock``: the system's, corrected by the median of what
verified neighbours say in CLOCK, the first message of every session, so that a Pi that
booted with a stale time still joins). Who is a neighbour and when it is a Babel link:
meshd.core.control.neighbours; what we believe of membership: .trust; whose routes are
whose: .routes; the exits: .gateways. Revocations, mesh definitions and gateway adverts
are flooded: each new one is passed on to every other verified neighbour.

Renewal (meshd.daemon.joins and .renewal ask and issue): RENEW_* go out as ``Renewal``; a
second MEMBERSHIP on a verified session is the neighbour's renewed certificate, checked like
the first; ``renewed`` shows our own to every verified neighbour at once.

Every costly kind a neighbour sends draws on its session's budget for that kind, charged
before it is decoded (meshd.core.proto.session.budget, ``Peer.rates``); a message beyond it
is not acted on, counted ``rate_<kind>`` in the neighbour's refusals.

A session starts CLOCK, MESH_DEFINITION (once the admins rotated), then MEMBERSHIP, so a
neighbour learns a new admin before it judges a certificate it signed. Versions
(meshd.core.proto.session): the session's protocol is negotiated in its handshake
(``protocols``, newest first; ``Peer.protocol``). On meshd/2 each side's first message is
CAPABILITIES, before CLOCK, and nothing else is read before it; what a peer announced
(``Peer.features``: the names this build knows) gates every newer kind or field we send it
(``peer_supports``). A dial the neighbour refused for want of a common version counts
``version_unsupported`` in its refusals.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from nacl.signing import SigningKey

from meshd.core import session_policy as policy
from meshd.core.control import effects as fx
from meshd.core.control.community_map import CommunityMap, Publishing
from meshd.core.control.gateways import Gateways
from meshd.core.control.neighbours import MAX_HOME_ADDRESSES, MAX_PEERS, Neighbours, shareable
from meshd.core.control.peer import Candidate, LinkSpec, Peer, Source
from meshd.core.control.rates import Rates
from meshd.core.control.routes import Routes
from meshd.core.control.trust import Trust
from meshd.core.endpoints import Address, format_endpoint
from meshd.core.errors import BadInput
from meshd.core.journal import Journal, unheard
from meshd.core.map_export import MapNode
from meshd.core.membership import (
    Cosigned,
    MembershipError,
    MeshDefinition,
    OwnMembership,
    Reason,
    Revocation,
    VerifiedMember,
)
from meshd.core.membership.clock import MeshClock
from meshd.core.membership.directory import ADDRESS_IN_USE, POOL_OVERLAP, DirectoryError
from meshd.core.membership.directory_sync import DirectoryMessage
from meshd.core.membership.names import NameOpening, shown
from meshd.core.membership.proposals import Heard, Proposal, Proposals
from meshd.core.proto import session as messages
from meshd.core.proto.babel import (
    BabelDecodeError,
    decode_packet_detail,
)
from meshd.core.proto.gateway import GatewayAdvert
from meshd.core.proto.map_record import link_quality
from meshd.core.proto.session import budget
from meshd.core.routing.babel import BabelRouter
from meshd.core.routing.progress import FlowSample
from meshd.core.session_policy import (
    Refusal,
    SessionInput,
    SessionKind,
    SessionState,
    coming_up,
)

VERIFY_S = 10.0  # a session whose certificate has not verified by then is closed
JOIN_S = 30.0  # a join-only session is closed by then (the issuer may be hops away)
ENFORCE_EVERY_S = 10.0  # how often live neighbours' certificates are checked again
# Babel's output is sent this long after the input that caused it, so that a burst of
# updates (a neighbour's full table, a cold start) leaves as one packet per neighbour and one
# batch of route changes, not one per update received (babeld buffers for about 10 ms too).
FLUSH_DELAY_S = 0.02
# A link that has not come up tries its neighbour's port as said, then as its NAT shifts
# its session's port, in turn, each for this long (meshd.core.control.plane._guess_port).
LINK_GUESS_S = 3.0
LINK_GUESSES = 10  # then, never up, it stays on the port as said (this session)
# A verified newcomer refused for what this node can hold (counted in discovery's refusals
# too, since a newcomer refused is forgotten with its own counts).
ISSUER_LINK_LIMIT = "issuer_link_limit"
NO_FREE_PORT = "no_free_port"
CAPACITY_REASONS = frozenset({ISSUER_LINK_LIMIT, NO_FREE_PORT})


class ControlPlane:
    def __init__(
        self,
        node_id: str,
        own: OwnMembership,
        router: BabelRouter,
        clock: MeshClock,
        link_port: Callable[[str], int | None],
        *,
        interface_prefix: str = "mw",
        issuer_link_limit: int | None = None,
        bootstrap: tuple[tuple[str, Address, str], ...] = (),
        share_endpoints: bool = True,
        forget_after_s: float = 600.0,
        signing_key: SigningKey | None = None,
        accept_unsigned: bool = False,
        forge_seqnos: int = 0,
        understate_metrics: bool = False,
        name_opening: NameOpening | None = None,
        publishing: Publishing | None = None,
        directory: bytes | None = None,
        journal: Journal = unheard,
        rng: random.Random | None = None,
        now: float = 0.0,
    ) -> None:
        self.node_id, self.router, self.clock = node_id, router, clock
        # Our WireGuard port for the link to a node (the node keeps it while its interface
        # lives; None: the range has none free): the one question the plane asks its shell.
        self.link_port = link_port
        # How many of our ports one delegate's members may hold (None: unbounded).
        self.issuer_link_limit = issuer_link_limit
        self.journal = journal
        self.share_endpoints = share_endpoints
        # What the shell does: ``drain`` takes it (meshd.core.control.effects), and the one
        # timer: ``flush`` is due then (Babel's output, FLUSH_DELAY_S after its input).
        self.effects: list[fx.Effect] = []
        self.flush_at: float | None = None
        self.takes_joins = False  # a join service listens (meshd.daemon.joins)
        self.takes_renewals = False  # a renewal service listens (meshd.daemon.joins)
        # Our private name and its salt, shown to verified neighbours (NAME); None: our
        # certificate holds the name itself (meshd.core.membership.names).
        self.name_opening = name_opening
        # The release whose whole artifact this node holds and serves (its manifest's
        # bytes; meshd.daemon.releases): offered to each neighbour that verifies.
        self.release_offer = b""
        self._saved_seqno = router.seqno
        self._next_enforce = now + ENFORCE_EVERY_S
        # Our membership and what we know of everyone's (meshd.core.control.trust).
        self.trust = Trust(own, clock, self.effects, journal, directory)
        # What admins propose and sign together, held and passed on by every node until
        # it carries the quorum (meshd.core.membership.proposals; the shell loads them).
        self.proposals = Proposals()
        # Route origins and black holes (meshd.core.control.routes); the stored directory
        # gives the origin check far members' addresses too.
        self.routes = Routes(
            router,
            own,
            clock,
            journal,
            signing_key=signing_key,
            accept_unsigned=accept_unsigned,
            forge_seqnos=forge_seqnos,
            understate_metrics=understate_metrics,
        )
        for member in self.trust.directory.members():
            if member.node_id != node_id:
                self.routes.learn(member)
        self.gateways = Gateways(
            node_id, own.trust.mesh_id, journal, self.trust.member, clock.consensus.tolerance_s
        )
        # What every member shows on the community map (meshd.core.control.community_map).
        self.community_map = CommunityMap(
            node_id,
            own.trust.mesh_id,
            journal,
            self.trust.member,
            clock.consensus.tolerance_s,
            publishing or Publishing(),
            signing_key,
        )
        # Every node we know of (meshd.core.control.neighbours).
        self.neighbours = Neighbours(
            node_id,
            router,
            self.effects,
            journal,
            self.trust.revoked,
            self.flush,
            member=lambda node_id: node_id in self.trust.directory,
            interface_prefix=interface_prefix,
            forget_after_s=forget_after_s,
            rng=rng,
        )
        self.peers = self.neighbours.peers
        for peer_id, address, name in bootstrap:
            peer = self.neighbours.add(peer_id, now, name)
            peer.bootstrap = True
            peer.addresses[address] = Candidate(Source.BOOTSTRAP)

    def drain(self) -> list[fx.Effect]:
        """What the inputs since the last drain asked for, in order."""
        out = list(self.effects)
        self.effects.clear()  # the list the collaborators append to
        return out

    @property
    def own(self) -> OwnMembership:
        return self.trust.own

    @property
    def membership_message(self) -> bytes:
        """Our certificate, as every session's MEMBERSHIP."""
        return self.trust.membership_message

    def renewed(self, own: OwnMembership) -> None:
        """Our renewed certificate (stored already): used from now on, on every session,
        and shown at once to every verified neighbour."""
        self.trust.renewed(own)
        self._send_verified(self.membership_message, but=None)

    # ---- sessions --------------------------------------------------------------------

    def authorize(self, node_id: str) -> str | None:
        """At the QUIC handshake: any node not revoked (the certificate comes next)."""
        return self.neighbours.admits(node_id, self.neighbours.established(), MAX_PEERS)

    def session_up(self, node_id: str, addr: Address, protocol: str, now: float) -> None:
        """A session with ``node_id`` came up (its key proved, ``authorize`` passed).

        A new session may replace the old one (the neighbour restarted): the handshake
        proved the same key, so what verified stays, and the Babel link with it, until the
        new session's certificate is checked (a link down would withdraw every route
        through the neighbour for the second Babel takes to learn them again)."""
        peer = self.neighbours.add(node_id, now)
        given = coming_up(protocol)
        peer.advance(given)
        peer.clock_offset, peer.held_definition = None, None
        peer.rates = Rates()
        peer.session_addr = addr
        peer.session_since = now
        peer.last_seen = now
        peer.protocol, peer.features = protocol, frozenset()
        self.journal("session.up", peer=peer.name, address=format_endpoint(addr), protocol=protocol)
        if given is SessionInput.UP_OPENING:
            self._send(peer.node_id, messages.Capabilities(messages.FEATURES))
        self._send(peer.node_id, messages.Clock(self.clock.unix_ms()))
        if self.own.trust.definition.serial > 1:
            definition = self.own.trust.signed_definition.encode()
            self._send(peer.node_id, messages.MeshDefinitionMessage(definition))
        self._send_raw(peer.node_id, self.membership_message)

    def session_message(self, node_id: str, data: bytes, now: float) -> None:
        """A message on the session with ``node_id`` (one we know of and have not closed:
        the last packets of a session we dropped are not read)."""
        peer = self.peers.get(node_id)
        if peer is not None and peer.session_up:
            self._on_message(peer, data, now)

    def session_closed(
        self, node_id: str, addr: Address, reason: str, by_peer: bool, was_up: bool, now: float
    ) -> None:
        """The session with ``node_id`` (empty: a dial that never learned who answered) is
        over; ``was_up``: it had come up (else a dial or handshake that failed)."""
        peer = self.peers.get(node_id)
        if peer is None or not was_up:
            self.neighbours.dial_failed(node_id, addr, reason, by_peer)
            return
        self.journal("session.down", peer=peer.name, reason=reason)
        peer.failed_dials += 1  # reset once a session verifies: a refusing peer backs off
        peer.advance(SessionInput.CLOSED)
        self.clock.gone(peer.node_id, *self._clock_time(now))
        peer.member, peer.credential = None, None
        peer.peer_port = None
        peer.protocol, peer.features = None, frozenset()
        self.trust.sync.peer_down(peer.node_id)
        peer.last_refusal = reason
        self.neighbours.reevaluate(peer, now)
        if not (peer.bootstrap or peer.addresses or peer.link):
            self.neighbours.drop(peer)  # a stranger that never verified: nothing to remember

    def _on_message(self, peer: Peer, data: bytes, now: float) -> None:
        verified = peer.session_state is SessionState.VERIFIED
        charged = budget.charge(data, verified)
        if charged is not None and not self._within_budget(peer, *charged, now):
            return
        try:
            msg = messages.decode(data)
            policy.check(SessionKind.NEIGHBOUR, peer.session_state, msg, peer.features)
        except BadInput as exc:  # the bytes, or the policy
            self._refuse(peer, exc.reason, exc.message)
            return
        if isinstance(msg, messages.Capabilities):
            # Names this build does not know are a newer node's: ignored.
            peer.features = frozenset(f for f in messages.FEATURES if f in msg.features)
            peer.advance(SessionInput.CAPABILITIES)
        elif isinstance(msg, messages.Clock):
            peer.clock_offset = msg.unix_ms / 1000 - self.clock.local()
        elif isinstance(msg, messages.MeshDefinitionMessage):
            self._on_definition(peer, msg.definition, now)
        elif isinstance(msg, messages.Membership):
            if verified:
                self._on_renewed_membership(peer, msg, now)
            else:
                self._on_membership(peer, msg, now)
        elif isinstance(msg, messages.JoinRequestMessage):
            self._on_join_request(peer, msg)
        else:
            peer.last_seen = now
            self._on_verified(peer, msg, now)

    def _on_verified(self, peer: Peer, msg: messages.SessionMessage, now: float) -> None:
        """A message the session policy lets only a verified neighbour send."""
        if isinstance(msg, messages.Link):
            peer.peer_port = msg.wireguard_port
            self._update_link(peer)
        elif isinstance(msg, messages.Endpoints):
            for ep in msg.endpoints:
                if ep.node_id == peer.node_id:
                    self._heard_home(peer, (ep.host, ep.port))
                elif self.neighbours.reachable(ep.host):
                    address = (ep.host, ep.port)
                    why = self.neighbours.discovered(ep.node_id, address, Source.SHARED, now)
                    if why is not None:  # the budgets' counts, and this neighbour's
                        peer.count_refusal(f"endpoint_{why}")
        elif isinstance(msg, messages.Revocations):
            self._on_revocations(peer, msg.revocations, now)
        elif isinstance(msg, messages.ProposalMessage):
            self._on_proposal(peer, msg.proposal, now)
        elif isinstance(msg, DirectoryMessage):
            self._on_directory(peer, msg, now)
        elif isinstance(msg, messages.Name):
            if peer.named(msg.salt, msg.name):
                self.journal("peer.named", peer=peer.node_id[:8], name=peer.name)
            else:  # counted in its refusals (``bad_name``); the session stays up
                peer.count_refusal("bad_name")
                self.journal("peer.bad_name", logging.WARNING, peer=peer.name)
        elif isinstance(msg, messages.Gateway):
            fresh, refused = self.gateways.heard(msg.advert, peer.name, self.clock.now())
            if refused is not None:
                peer.count_refusal(f"gateway_{refused}")
            if fresh:
                self._send_verified(messages.encode(msg), but=peer.node_id)
        elif isinstance(msg, messages.MapMessage):
            taken, refused = self.community_map.heard(msg.record, self.clock.now(), now)
            if refused is not None:
                peer.count_refusal(f"map_{refused}")
                self.journal("map.refused", logging.WARNING, peer=peer.name, reason=refused)
            if taken is not None:
                self._send_map(taken, but=peer.node_id)
        elif isinstance(msg, fx.MeteringMessage):
            self.effects.append(fx.Metering(peer.node_id, msg))
        elif isinstance(msg, fx.ReleaseMessage):
            self.effects.append(fx.Release(peer.node_id, msg))
        elif isinstance(msg, fx.RenewalMessage):
            if not self.takes_renewals:
                self._refuse(peer, "renewal_unavailable", "this node takes no renewals")
            else:
                self.effects.append(fx.Renewal(peer.node_id, msg))
        elif isinstance(msg, messages.BabelPacket):
            try:
                tlvs = decode_packet_detail(msg.packet).tlvs
            except BabelDecodeError as exc:
                self._refuse(peer, f"babel_{exc.reason}", str(exc))
                return
            self.router.receive(peer.node_id, tlvs, now)
            self._flush_soon(now)

    def peer_supports(self, peer: str | Peer, feature: messages.Feature) -> bool:
        """Whether a neighbour (node id or Peer) announced ``feature`` on its session now:
        what every message kind or field newer than meshd/1 is sent on."""
        found = self.peers.get(peer) if isinstance(peer, str) else peer
        return found is not None and feature in found.features

    def _on_join_request(self, peer: Peer, msg: messages.JoinRequestMessage) -> None:
        """A node without a certificate asks to join: one request per session, from a
        session that showed no certificate, handed to ``on_join`` (meshd.daemon.joins)."""
        if not self.takes_joins:
            self._refuse(peer, "join_unavailable", "this node takes no join requests")
            return
        peer.advance(SessionInput.JOIN_REQUEST)
        where = format_endpoint(peer.session_addr) if peer.session_addr else "?"
        self.journal("join.session", peer=peer.node_id[:8], address=where)
        self.effects.append(fx.JoinRequest(peer.node_id, msg))

    def answer_join(
        self, node_id: str, answer: messages.JoinGranted | messages.JoinRefused
    ) -> bool:
        """The answer to a join request, on the join-only session it came from (if that is
        still up); the joining node closes it once it has read it."""
        peer = self.peers.get(node_id)
        if peer is None or not peer.joining or not peer.session_up:
            return False
        self._send(node_id, answer)
        return True

    def _on_renewed_membership(self, peer: Peer, msg: messages.Membership, now: float) -> None:
        """A verified neighbour shows its certificate again: renewed. It must verify and be
        for the same keys; then it replaces the old one (re-checked every 10 s)."""
        try:
            member, credential = self.trust.check(
                peer.node_id, peer.clock_offset, msg, self._clock_time(now)
            )
        except Refusal as exc:
            self._refuse(peer, exc.reason, exc.message)
            return
        assert peer.member is not None
        if member.wireguard_public != peer.member.wireguard_public:
            self._refuse(peer, "changed_keys", "a renewed certificate with another WireGuard key")
            return
        peer.member, peer.credential = member, credential
        peer.advance(SessionInput.CERTIFIED)
        self.journal("peer.renewed", peer=peer.name, valid_until=member.valid_until)
        self.routes.learn(member)  # its addresses are its own from now on
        self.router.revalidate(now)
        self._send_directory(self.trust.add_to_directory(credential))
        self._update_link(peer)

    def _on_membership(self, peer: Peer, msg: messages.Membership, now: float) -> None:
        held, peer.held_definition = peer.held_definition, None
        if held is not None:
            try:
                if self.trust.vouched(peer.node_id, held, msg):
                    self.adopt_definition(held, now, learned_from=peer.node_id)
                else:
                    peer.count_refusal("definition_from_stranger")
            except MembershipError as exc:
                self._definition_refused(peer, exc)
        try:
            member, credential = self.trust.check(
                peer.node_id, peer.clock_offset, msg, self._clock_time(now)
            )
            port = self._claim_port(peer, member)
        except Refusal as exc:
            self._refuse(peer, exc.reason, exc.message)
            if exc.reason in CAPACITY_REASONS and not peer.verified_once:
                self.neighbours.refusals[exc.reason] = (
                    self.neighbours.refusals.get(exc.reason, 0) + 1
                )
            return
        peer.member, peer.credential = member, credential
        peer.verified_once = True
        peer.advance(SessionInput.CERTIFIED)
        self.effects.append(fx.Verified(peer.node_id))
        self.routes.learn(member)  # its addresses are its own from now on
        self.router.revalidate(now)
        self._send_directory(self.trust.add_to_directory(credential))
        if self.peer_supports(peer, messages.Feature.DIRECTORY):
            self._send_directory(self.trust.sync.peer_up(peer.node_id))
        peer.name = shown(member.name, member.node_id)  # a private name comes by NAME
        opening = self.name_opening
        if opening is not None and self.peer_supports(peer, messages.Feature.PRIVATE_NAMES):
            self._send(peer.node_id, messages.Name(opening.salt, opening.name))
        if peer.session_addr is not None:  # where a verified member is: worth redialling
            candidate = peer.addresses.setdefault(peer.session_addr, Candidate(Source.SESSION))
            candidate.dials = 0
        peer.last_refusal = None
        peer.failed_dials = 0
        peer.home = ()  # it says again, on this session
        peer.link_came_up, peer.link_shifted, peer.link_tried_at = False, False, None
        peer.link_guesses = 0
        self.journal(
            "peer.verified",
            peer=peer.name,
            issuer=member.issuer,
            valid_until=member.valid_until,
        )
        peer.own_port = port
        self._send(peer.node_id, messages.Link(port))
        if (revocations := self.trust.revocations_message()) is not None:
            self._send(peer.node_id, revocations)
        for advert in self.gateways.known():  # the newcomer learns the exits
            self._send(peer.node_id, messages.Gateway(advert.encode()))
        if self.peer_supports(peer, messages.Feature.MAP):  # and the map
            for record in self.community_map.known():
                self._send(peer.node_id, messages.MapMessage(record))
        if self.release_offer and self.peer_supports(peer, messages.Feature.RELEASES):
            self._send(peer.node_id, messages.Release(self.release_offer))
        if self.peer_supports(peer, messages.Feature.PROPOSALS):
            for proposal in self.proposals:
                self._send(peer.node_id, messages.ProposalMessage(proposal.encode()))
        if self.share_endpoints:
            self._share_endpoints(peer)
        self._update_link(peer)
        self.neighbours.reevaluate(peer, now)

    def _claim_port(self, peer: Peer, member: VerifiedMember) -> int:
        """Our WireGuard port for the link to a neighbour whose certificate verified (the
        one it holds already, if any). Refusal when one delegate's members hold
        ``issuer_link_limit`` of our ports already (``issuer_link_limit``: each identity a
        delegate mints would cost us an interface and a port), or none is free
        (``no_free_port``): the newcomer is refused, never the handler raising."""
        issuer = member.issuer if member.delegation is not None else None
        limit = self.issuer_link_limit
        if peer.own_port is None and issuer is not None and limit is not None:
            held = sum(
                1
                for p in self.peers.values()
                if p is not peer and p.own_port is not None and p.port_issuer == issuer
            )
            if held >= limit:
                raise Refusal(
                    ISSUER_LINK_LIMIT, f"{held} links here are of members certified by {issuer}"
                )
        port = self.link_port(peer.node_id)
        if port is None:
            raise Refusal(NO_FREE_PORT, "no WireGuard port left in the configured range")
        peer.port_issuer = issuer
        return port

    def _share_endpoints(self, newcomer: Peer) -> None:
        """Tell the newcomer where our other neighbours are (their sessions come from,
        and where they say they are on their home networks), and them where it is; and
        it where we are on ours."""
        known = [
            messages.Endpoint(p.node_id, *address)
            for p in self.peers.values()
            if p is not newcomer and p.member is not None and p.session_addr is not None
            for address in (p.session_addr, *p.home)
            if shareable(address[0])
        ][: messages.MAX_ENDPOINTS]
        if known:
            self._send(newcomer.node_id, messages.Endpoints(tuple(known)))
        if home := self.neighbours.home_endpoints:
            own = tuple(messages.Endpoint(self.node_id, *address) for address in home)
            self._send(newcomer.node_id, messages.Endpoints(own))
        if newcomer.session_addr is None or not shareable(newcomer.session_addr[0]):
            return
        host, port = newcomer.session_addr
        news = messages.encode(
            messages.Endpoints((messages.Endpoint(newcomer.node_id, host, port),))
        )
        self._send_verified(news, but=newcomer.node_id)

    def _guess_port(self, peer: Peer, now: float) -> None:
        """A neighbour behind a NAT that gives its session another port than the one it
        listens on (what it says of its home address) may give its link's port another
        too: an endpoint-independent NAT that maps into another range shifts every port
        alike. Until its link first carries packets, its port is tried as it says, then
        shifted so, in turn (the other end's WireGuard follows what gets through)."""
        if peer.wireguard_up:
            peer.link_came_up = True
        if peer.link is None or peer.link_came_up or not _port_shift(peer):
            peer.link_tried_at = None
            return
        if peer.link_tried_at is None:
            peer.link_tried_at = now
        elif now - peer.link_tried_at >= LINK_GUESS_S and peer.link_guesses < LINK_GUESSES:
            peer.link_guesses += 1
            peer.link_shifted = not peer.link_shifted and peer.link_guesses < LINK_GUESSES
            peer.link_tried_at = now
            self._update_link(peer)
            endpoint = format_endpoint(peer.link.endpoint)
            self.journal("link.port_guess", logging.DEBUG, peer=peer.name, endpoint=endpoint)

    def _heard_home(self, peer: Peer, address: Address) -> None:
        """``peer`` says its sessions are at ``address`` on its home network too: held
        (a few) and passed on to our other neighbours, as where it is seen from is. One
        that is no use to anyone, or one too many, is counted in its refusals."""
        if address in peer.home or address == peer.session_addr:
            return
        if not shareable(address[0]):
            peer.count_refusal("endpoint_unshareable")
            return
        if len(peer.home) >= MAX_HOME_ADDRESSES:
            peer.count_refusal("endpoint_addresses_full")
            return
        peer.home += (address,)
        if self.share_endpoints:
            news = messages.Endpoints((messages.Endpoint(peer.node_id, *address),))
            self._send_verified(messages.encode(news), but=peer.node_id)

    def _update_link(self, peer: Peer) -> None:
        """Build (or change) the WireGuard link once both ports and the key are known."""
        if (
            peer.member is None
            or peer.own_port is None
            or peer.peer_port is None
            or peer.session_addr is None
        ):
            return
        port = peer.peer_port + (_port_shift(peer) if peer.link_shifted else 0)
        spec = LinkSpec(
            node_id=peer.node_id,
            name=peer.name,
            ifname=peer.ifname,
            wireguard_public=peer.member.wireguard_public,
            endpoint=(peer.session_addr[0], port),
            listen_port=peer.own_port,
            mesh_ipv4=peer.member.mesh_ipv4,
        )
        if spec != peer.link:
            peer.link = spec
            self.effects.append(fx.EnsureLink(spec))

    def _within_budget(self, peer: Peer, kind: str, tokens: int, now: float) -> bool:
        """Whether ``peer`` may still send ``tokens`` of ``kind`` on this session
        (meshd.core.proto.session.budget). A message beyond its budget is not acted on:
        counted (its TLVs or records, as the routes and revocations refused are counted;
        otherwise once), logged at the first and about every 1,000th; the session stays up."""
        if peer.rates.take(kind, tokens, now):
            return True
        things = tokens if budget.BUDGETS[kind].unit in ("tlv", "record") else 1
        before = peer.refusals.get(f"rate_{kind}", 0)
        count = peer.count_refusal(f"rate_{kind}", things)
        if before // 1000 != count // 1000 or not before:
            self.journal(
                "session.over_budget", logging.WARNING, peer=peer.name, kind=kind, count=count
            )
        return False

    def _refuse(self, peer: Peer, reason: str, detail: str) -> None:
        """Bad input from a peer closes that session only, with the reason logged."""
        self.journal(
            "session.refused", logging.WARNING, peer=peer.name, reason=reason, detail=detail
        )
        peer.last_refusal = reason
        peer.count_refusal(reason)
        self.effects.append(fx.Close(peer.node_id, reason))

    # ---- gateways --------------------------------------------------------------------

    def originate_gateway(self, advert: GatewayAdvert) -> None:
        """Our own advert (sharing our uplink, or withdrawing it): to every neighbour."""
        self.gateways.originate(advert)
        self._send_verified(messages.encode(messages.Gateway(advert.encode())), but=None)

    def choose_gateway(self, now: float) -> None:
        """The exit, chosen again (each tick, and when a gateway refused us), after the
        held adverts whose gateway's certificate arrived meanwhile are taken and flooded."""
        wall = self.clock.now()
        for advert in self.gateways.resolved(wall):
            self._send_verified(messages.encode(messages.Gateway(advert.encode())), but=None)
        self.gateways.choose(self.router.selected(), wall, now)

    # ---- mesh definitions (admin rotation) -------------------------------------------

    def _on_definition(self, peer: Peer, data: bytes, now: float) -> None:
        """A verified member's newer definition is adopted at once; one from a neighbour
        not verified yet is held until its certificate verifies (``_on_membership``): a
        stranger cannot hand us a definition, even one an admin key signed."""
        try:
            signed = Cosigned.decode(data, MeshDefinition)
            if peer.session_state is SessionState.VERIFIED:
                self.adopt_definition(signed, now, learned_from=peer.node_id)
            elif self.trust.follows(signed):
                peer.held_definition = signed
        except MembershipError as exc:
            self._definition_refused(peer, exc)

    def _definition_refused(self, peer: Peer, exc: MembershipError) -> None:
        # Relayed like revocations: not necessarily the sender's fault; keep the session.
        peer.count_refusal(f"definition_{exc.reason}")
        self.journal("mesh.definition_rejected", logging.WARNING, peer=peer.name, reason=str(exc))

    def adopt_definition(
        self, signed: Cosigned[MeshDefinition], now: float, learned_from: str | None = None
    ) -> bool:
        """A mesh definition gossiped or handed in (``meshd admin-key rotate``): True when
        it was newer and is now ours (stored, spread, every neighbour checked again under
        it); False when we hold it already; MembershipError when it may not follow ours
        (short of its quorum, say)."""
        if not self.trust.adopt(signed):
            return False
        message = messages.encode(messages.MeshDefinitionMessage(signed.encode()))
        for peer in self.peers.values():
            if peer.session_up and peer.node_id != learned_from:
                self._send_raw(peer.node_id, message)
        self.enforce_membership(now)
        return True

    # ---- proposals -------------------------------------------------------------------

    def _on_proposal(self, peer: Peer, data: bytes, now: float) -> None:
        """A refused proposal is counted in the sender's refusals (``proposal_<reason>``)
        and the session stays: a proposal is relayed, not necessarily its sender's."""
        try:
            self.hear_proposal(Proposal.decode(data), now, learned_from=peer.node_id)
        except BadInput as exc:
            peer.count_refusal(f"proposal_{exc.reason}")
            self.journal("proposal.refused", logging.WARNING, peer=peer.name, reason=str(exc))

    def _save_proposals(self) -> None:
        """Store what we hold: one write for a run of changes (a start loads them one by
        one), since each save carries them all."""
        self.effects[:] = [e for e in self.effects if not isinstance(e, fx.SaveProposals)]
        self.effects.append(fx.SaveProposals(tuple(p.encode() for p in self.proposals)))

    def hear_proposal(
        self, proposal: Proposal, now: float, learned_from: str | None = None
    ) -> Heard:
        """A proposal from a neighbour, or handed in (``meshd proposals``): held, stored
        and passed on while it grows; taken as if handed in once it carries the quorum
        (adopted, or revoked). BadInput (Refused, MembershipError) when it is refused."""
        heard = self.proposals.heard(proposal, self.own.trust, self.clock.now())
        held = heard.proposal
        if heard.outcome == "same":
            return heard
        self._save_proposals()
        signers = held.signed.signers(self.own.trust.definition.admins)
        if heard.signed is None:
            self.journal(
                "proposal.withdrawn" if held.dropped else "proposal.held",
                id=held.id,
                signed=len(signers),
                needed=self.proposals.needed(held, self.own.trust),
            )
            data = messages.encode(messages.ProposalMessage(held.encode()))
            self._send_verified(data, but=learned_from, feature=messages.Feature.PROPOSALS)
            return heard
        self.journal("proposal.carried", id=held.id, signed=len(signers))
        if isinstance(heard.signed.record, MeshDefinition):
            self.adopt_definition(heard.signed, now)
        else:
            self.add_revocation_records([heard.signed.encode()], now)
        return heard

    # ---- revocations -----------------------------------------------------------------

    def add_revocation_records(self, records: list[bytes], now: float) -> dict[str, int]:
        """Revocations handed in locally (the control API): all must verify, or none is
        taken and the first that does not raises MembershipError."""
        fresh, given = self.trust.take_revocations(records)
        if fresh:
            self.add_revocations(fresh, now)
        return {"added": len(fresh), "known": given - len(fresh)}

    def _on_revocations(self, peer: Peer, records: tuple[bytes, ...], now: float) -> None:
        """Each refused record is counted in the sender's refusals; one with a forged
        admin signature closes its session (what verified before it is still taken)."""
        fresh, refused = self.trust.hear_revocations(records, peer.name)
        for error in refused:
            peer.count_refusal(f"revocation_{error.reason}")
        if fresh:
            self.add_revocations(fresh, now, learned_from=peer.node_id)
        if refused and refused[-1].reason is Reason.BAD_SIGNATURE:
            self._refuse(peer, "forged_revocation", str(refused[-1]))

    def add_revocations(
        self, fresh: list[Revocation], now: float, learned_from: str | None = None
    ) -> None:
        """Revocations new to us (already in the set): persist, spread, enforce."""
        self._send_verified(self.trust.learned(fresh), but=learned_from)
        self.enforce_membership(now)

    def enforce_membership(self, now: float) -> None:
        """Drop neighbours whose certificate no longer verifies (revoked, expired), with
        their session and link; a revoked node we only know of is forgotten too. The mesh
        clock first: a correction held back or an offset aged out takes effect, and its
        floor rises to what is now in force."""
        self.clock.update(*self._clock_time(now))
        self.trust.raise_clock_floor()
        for peer in list(self.peers.values()):
            reason = self.trust.invalid(peer.credential, peer.node_id)
            if reason is None:
                continue
            self.journal("peer.dropped", logging.WARNING, peer=peer.name, reason=reason)
            if reason in (ADDRESS_IN_USE, POOL_OVERLAP):  # a member certified first came
                peer.count_refusal(reason)
            if reason == "revoked":
                self.routes.forget(peer.node_id)
            if peer.session_up:
                self.effects.append(fx.Close(peer.node_id, reason))
                peer.advance(SessionInput.CLOSED)
            peer.member, peer.credential = None, None
            self.neighbours.reevaluate(peer, now)
            peer.bootstrap = False  # never dialled again
            self.neighbours.forget(peer)
        for node_id in self.trust.prune():  # expired or revoked
            if node_id != self.node_id:
                self.routes.forget(node_id)
        if self.proposals.prune(self.own.trust, self.clock.now()):  # lapsed, or overtaken
            self._save_proposals()
        self.router.revalidate(now)
        self._next_enforce = now + ENFORCE_EVERY_S

    def _clock_time(self, now: float) -> tuple[float, int]:
        """What the mesh clock's consensus weighs a report with: when, and how many
        neighbours we have a session with (its quorum)."""
        return now, sum(1 for p in self.peers.values() if p.session_up and not p.joining)

    # ---- time ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if now >= self._next_enforce:
            self.enforce_membership(now)
        for peer in list(self.peers.values()):
            if peer.joining and now - peer.session_since > JOIN_S:
                self._refuse(peer, "join_timeout", f"a join-only session for {JOIN_S:.0f} s")
            elif (
                peer.session_up
                and peer.member is None
                and not peer.joining
                and now - peer.session_since > VERIFY_S
            ):
                self._refuse(peer, "not_verified", f"no valid certificate within {VERIFY_S:.0f} s")
            self.neighbours.idle(peer, now)
            self._guess_port(peer, now)
        self.router.tick(now)
        self.flush()
        self.choose_gateway(now)
        self._send_directory(self.trust.sync.tick(now))
        self.trust.save_directory()
        self._map_tick(now)

    def probe(self, now: float) -> None:
        """Probes due through the tunnels: called with the time they leave at (a Hello's
        timestamp starts its RTT), after the tick's other output went."""
        for peer in list(self.peers.values()):
            self.neighbours.probe(peer, now)

    def _flush_soon(self, now: float) -> None:
        """``flush`` after FLUSH_DELAY_S (once for everything that arrives meanwhile): the
        shell's timer, at ``flush_at``."""
        if self.flush_at is None:
            self.flush_at = now + FLUSH_DELAY_S

    def flush(self) -> None:
        """Send Babel's queued packets, apply its route changes, persist its seqno."""
        self.flush_at = None
        for node_id, tlvs in self.router.drain_outgoing():
            peer = self.peers.get(node_id)
            if tlvs and peer is not None and peer.session_up:
                signed = self.peer_supports(peer, messages.Feature.SIGNED_ROUTES)
                self._send(node_id, messages.BabelPacket(self.routes.packet(tlvs, signed)))
        for refused in self.router.drain_refused():
            if (peer := self.peers.get(refused.neighbour)) is not None:
                self.routes.refused(refused, peer)
        changes = self.router.drain_route_changes()
        if changes:
            self.effects.append(fx.ApplyRoutes(tuple(changes)))
        if self.router.seqno != self._saved_seqno:
            self._saved_seqno = self.router.seqno
            self.effects.append(fx.SaveSeqno(self.router.seqno))

    # ---- the certificate directory ------------------------------------------------------

    def _on_directory(self, peer: Peer, msg: DirectoryMessage, now: float) -> None:
        """Reconciliation with a neighbour that announced the feature; entries that do not
        verify are counted in its refusals and the session stays up."""
        try:
            learned, refused, outgoing = self.trust.on_directory(peer.node_id, msg, now)
        except DirectoryError as exc:
            self._refuse(peer, f"directory_{exc.reason}", exc.message)
            return
        for error in refused:
            peer.count_refusal(f"directory_{error.reason}")
        for member in learned:  # one revalidation for the batch, not one each
            self.routes.learn(member)
        if learned:
            self.router.revalidate(now)
            self.journal("directory.learned", peer=peer.name, members=len(learned))
        self._send_directory(outgoing)

    def _send_directory(self, outgoing: list[tuple[str, DirectoryMessage]]) -> None:
        for node_id, message in outgoing:
            if self.peer_supports(node_id, messages.Feature.DIRECTORY):
                self._send(node_id, message)

    # ---- the community map ------------------------------------------------------------

    def _map_tick(self, now: float) -> None:
        """Map records whose wait is over passed on, and ours published when due."""
        wall = self.clock.now()
        for record in self.community_map.due(wall, now):
            self._send_map(record, but=None)
        links = {
            p.node_id: link_quality(p.quality.reported_cost)
            for p in self.peers.values()
            if p.routing and p.quality is not None
        }
        if (own := self.community_map.publish(links, wall, now)) is not None:
            self._send_map(own, but=None)

    def _send_map(self, record: bytes, but: str | None) -> None:
        data = messages.encode(messages.MapMessage(record))
        self._send_verified(data, but, messages.Feature.MAP)

    def map_nodes(self) -> list[MapNode]:
        """The map as this node sees it: every record it keeps, with whether the node is
        online (its record lives and we have a route to it) and a gateway (it has a signed
        advert out that says its uplink is available)."""
        wall = self.clock.now()
        routed = {
            str(p.network_address) for p in self.router.selected() if p.prefixlen in (32, 128)
        }
        gateways = {g for g, a in self.gateways.table.adverts.items() if a.available}
        own = self.gateways.own_advert
        if own is not None and own.available:
            gateways.add(self.node_id)
        nodes = []
        for issuer, entry in self.community_map.entries.items():
            member = self.trust.member(issuer) if issuer != self.node_id else None
            reached = issuer == self.node_id or (
                member is not None and str(member.mesh_ipv4) in routed
            )
            nodes.append(
                MapNode(
                    entry.record,
                    entry.first_seen,
                    online=reached and entry.record.expires_at > wall,
                    gateway=issuer in gateways,
                )
            )
        return nodes

    def observe_progress(self, flows: list[FlowSample], now: float) -> None:
        """A reading of the flows to mesh addresses (meshd.core.control.routes)."""
        if self.routes.observe(flows, now, self._name_of):
            self.flush()  # the route changes, at once

    def _name_of(self, node_id: str) -> str | None:
        peer = self.peers.get(node_id)
        return peer.name if peer is not None else None

    def black_hole_status(self, now: float) -> list[dict[str, Any]]:
        return self.routes.black_hole_status(now, self._name_of)

    def _send_verified(
        self, data: bytes, but: str | None, feature: messages.Feature | None = None
    ) -> None:
        """To every neighbour whose certificate verified, except ``but`` (the one a flooded
        message came from), and that announced ``feature`` when one is named."""
        for p in self.peers.values():
            if (
                p.node_id != but
                and p.member is not None
                and (feature is None or feature in p.features)
            ):
                self._send_raw(p.node_id, data)

    def offer_release(self, manifest: bytes) -> None:
        """Serve a release from now on (meshd.daemon.releases): its manifest goes to every
        verified neighbour that takes releases now, and to each that verifies later."""
        self.release_offer = manifest
        data = messages.encode(messages.Release(manifest))
        self._send_verified(data, None, messages.Feature.RELEASES)

    def release_peers(self) -> set[str]:
        """The verified neighbours whose sessions are up and carry releases."""
        return {
            p.node_id
            for p in self.peers.values()
            if p.member is not None and p.session_up and messages.Feature.RELEASES in p.features
        }

    def send_to_member(self, node_id: str, message: messages.SessionMessage) -> bool:
        """Send to a neighbour whose certificate verified (on its current session, or on
        the one that session replaced: the handshake proved the same key)."""
        peer = self.peers.get(node_id)
        if peer is None or peer.member is None:
            return False
        self._send(node_id, message)
        return True

    def _send(self, node_id: str, message: messages.SessionMessage) -> None:
        self._send_raw(node_id, messages.encode(message))

    def _send_raw(self, node_id: str, data: bytes) -> None:
        self.effects.append(fx.Send(node_id, data))


def _port_shift(peer: Peer) -> int:
    """How far its NAT moved its session's port from the one it listens on (0: not at
    all, or nothing known), where the link's port moved as far is still a port."""
    if peer.session_addr is None or not peer.home or peer.peer_port is None:
        return 0
    shift = peer.session_addr[1] - peer.home[0][1]
    return shift if 0 < peer.peer_port + shift <= 0xFFFF else 0

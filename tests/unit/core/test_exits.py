"""The exits' core (meshd.core.exits) on its own: a gateway admitting, refusing, metering
and releasing its users, a user following the control plane's choice of gateway, all as
inputs with ``now`` and effects out. The kernel and the sessions are the netns tests'
(tests/netns/test_exit*.py)."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from meshd.core import exits
from meshd.core.control import effects as fx
from meshd.core.proto import session
from meshd.core.proto.gateway import GatewayAdvert, make_advert
from meshd.core.routing.gateways import Candidate, Choice
from meshd.core.routing.uplink_health import UplinkHealth
from tests.unit.core.control.test_control_core import ADMIN, WALL, Mesh, cert

PEER_IP = ipaddress.IPv4Address("10.77.0.2")


TERMS = exits.GatewayTerms(
    share=True,
    exit_port=52820,
    accepts_new=True,
    rate_cap_kbit=None,
    quota_bytes=0,
    blocked=frozenset(),
    mesh_ipv4=ipaddress.IPv4Address("10.77.0.1"),
    quic_port=6698,
)


class World(Mesh):
    def __init__(self, tmp: Path, health: UplinkHealth | None = None, **changes: object) -> None:
        super().__init__(tmp)
        terms = dataclasses.replace(TERMS, **changes)
        self.exits = exits.Exits(self.core, self.me.signing_key, terms, health)

    def message(self, message: session.SessionMessage, now: float = 1.0) -> list[exits.Effect]:
        self.exits.message(self.peer.node_id, session.encode(message), now)
        return self.exits.drain()

    def exit_verified(self) -> list[exits.Effect]:
        self.exits.session_up(self.peer.node_id, session.MESHD_2, 1.0)
        self.exits.drain()
        self.message(session.Capabilities(session.FEATURES))
        return self.message(session.Membership(cert(self.peer, str(PEER_IP))))


def up_health() -> UplinkHealth:
    health = UplinkHealth(5.0, 15.0)
    health.due(0.0)
    health.result(True, 0.0)
    return health


def sent(effects: list[exits.Effect]) -> list[session.SessionMessage]:
    return [session.decode(e.data) for e in effects if isinstance(e, fx.Send | exits.Grant)]


def test_a_session_shows_capabilities_then_our_certificate(tmp_path: Path) -> None:
    world = World(tmp_path, up_health())
    world.exits.session_up(world.peer.node_id, session.MESHD_2, 1.0)
    assert [type(m) for m in sent(world.exits.drain())] == [
        session.Capabilities,
        session.Membership,
    ]


def test_a_verified_member_that_asks_is_admitted_and_granted(tmp_path: Path) -> None:
    world = World(tmp_path, up_health())
    assert world.exit_verified() == []  # we are not its gateway-to-be: nothing to ask
    effects = world.message(session.ExitRequest())
    admit = effects.index(exits.Admit(world.peer.wireguard_public, PEER_IP))
    # The grant goes once the kernel has the peer (behind the Admit), not as a plain Send.
    (grant,) = [i for i, e in enumerate(effects) if isinstance(e, exits.Grant)]
    assert admit < grant and not [e for e in effects if isinstance(e, fx.Send)]
    assert sent(effects) == [session.ExitGrant(52820)]
    assert world.exits.user_of == {PEER_IP: world.peer.node_id}
    # Asking again is granted again, not admitted twice.
    assert not [e for e in world.message(session.ExitRequest()) if isinstance(e, exits.Admit)]
    world.exits.session_closed(world.peer.node_id, "idle")
    assert world.exits.drain() == [exits.Release(world.peer.wireguard_public)]


def test_anything_before_the_certificate_closes_the_session(tmp_path: Path) -> None:
    world = World(tmp_path, up_health())
    world.exits.session_up(world.peer.node_id, session.MESHD_2, 1.0)
    world.exits.drain()
    world.message(session.Capabilities(session.FEATURES))
    effects = world.message(session.ExitRequest())
    assert effects == [fx.Close(world.peer.node_id, "not_verified")]
    assert not world.exits.peers[world.peer.node_id].admitted


def test_a_neighbour_kind_is_not_legal_on_an_exit_session(tmp_path: Path) -> None:
    world = World(tmp_path, up_health())
    world.exit_verified()
    effects = world.message(session.Link(51820))
    assert len(effects) == 1 and isinstance(effects[0], fx.Close)


def test_a_session_that_never_shows_a_certificate_is_closed_after_the_deadline(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, up_health())
    world.exits.session_up(world.peer.node_id, session.MESHD_2, 1.0)
    world.exits.drain()
    world.exits.tick(1.0 + exits.VERIFY_S / 2, ())
    assert fx.Close(world.peer.node_id, "not_verified") not in world.exits.drain()
    world.exits.tick(2.0 + exits.VERIFY_S, ())
    assert fx.Close(world.peer.node_id, "not_verified") in world.exits.drain()


@pytest.mark.parametrize(
    ("health", "changes", "reason"),
    [
        (True, {"share": False}, "not_a_gateway"),
        (False, {}, "uplink_down"),
        (True, {"accepts_new": False}, "not_taking_new_users"),
    ],
)
def test_terms_refuse_with_their_reason(
    tmp_path: Path, health: bool, changes: dict[str, object], reason: str
) -> None:
    world = World(tmp_path, up_health() if health else UplinkHealth(5.0, 15.0), **changes)
    world.exit_verified()
    effects = world.message(session.ExitRequest())
    assert sent(effects) == [session.ExitRefused(reason)]
    assert not [e for e in effects if isinstance(e, exits.Admit)]


def test_blocking_releases_a_user_at_once_and_keeps_only_the_run_time_list(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, up_health(), blocked=frozenset({"c" * 43}))
    world.exit_verified()
    world.message(session.ExitRequest())
    world.exits.block(world.peer.node_id, True)
    effects = world.exits.drain()
    assert effects == [
        exits.SaveBlocked((world.peer.node_id,)),
        exits.Release(world.peer.wireguard_public),
        fx.Close(world.peer.node_id, "blocked"),
    ]
    assert sent(world.message(session.ExitRequest())) == [session.ExitRefused("blocked")]
    with pytest.raises(ValueError, match="config"):
        world.exits.block("c" * 43, False)
    world.exits.block(world.peer.node_id, False)
    assert world.exits.drain() == [exits.SaveBlocked(())]


def test_a_user_at_its_quota_is_released_told_and_refused_until_the_month_ends(
    tmp_path: Path,
) -> None:
    world = World(tmp_path, up_health(), quota_bytes=1000)
    world.exits.month_is("2027-01")
    world.exit_verified()
    world.message(session.ExitRequest())
    assert world.exits.by_user({PEER_IP: 600, ipaddress.IPv4Address("10.77.9.9"): 5}) == {
        world.peer.node_id: 600
    }
    world.exits.metered({world.peer.node_id: 600})
    assert world.exits.drain() == []
    world.exits.metered({world.peer.node_id: 1000})
    effects = world.exits.drain()
    assert exits.Release(world.peer.wireguard_public) in effects
    assert sent(effects) == [session.ExitRefused("quota_reached")]
    assert sent(world.message(session.ExitRequest())) == [session.ExitRefused("quota_reached")]
    world.exits.month_is("2027-02")  # every quota starts again
    assert sent(world.message(session.ExitRequest())) == [session.ExitGrant(52820)]


def test_the_uplink_is_checked_one_at_a_time_and_announced_once_known(tmp_path: Path) -> None:
    world = World(tmp_path, UplinkHealth(5.0, 15.0))
    world.exits.tick(0.0, ())
    assert world.exits.drain() == [exits.CheckUplink()]  # nothing announced while unknown
    world.exits.tick(6.0, ())
    assert exits.CheckUplink() not in world.exits.drain()  # the first is still out
    world.exits.uplink_checked(True, "", 6.5, ())
    world.exits.tick(7.0, ())
    (announce,) = [e for e in world.exits.drain() if isinstance(e, exits.Announce)]
    assert announce.advert.available and announce.advert.exit_port == 52820
    assert announce.advert.node_id == world.me.node_id
    # A dead uplink withdraws the advert at once.
    world.exits.tick(30.0, ())
    (withdrawn,) = [e for e in world.exits.drain() if isinstance(e, exits.Announce)]
    assert not withdrawn.advert.available and world.exits.needs_exit


def advert(world: World, key: SigningKey, mesh_ipv4: ipaddress.IPv4Address) -> GatewayAdvert:
    """An available gateway's advert, signed by ``key``, issued now."""
    return make_advert(
        key,
        mesh_id=world.core.own.trust.mesh_id,
        mesh_ipv4=mesh_ipv4,
        exit_port=52821,
        seqno=1,
        issued_at=int(WALL),
        lifetime_s=300,
    )


def choose_the_peer(world: World) -> None:
    """The peer advertises its exit, and the control plane chose it."""
    gateway = world.peer.node_id
    world.core.gateways.table.adverts[gateway] = advert(world, world.peer.signing_key, PEER_IP)
    world.core.gateways.choice = Choice(gateway, (), True)


def test_a_user_dials_the_chosen_gateway_asks_and_uses_the_grant(tmp_path: Path) -> None:
    world = World(tmp_path, None, share=False)  # no uplink of our own: needs an exit
    gateway = world.peer.node_id
    choose_the_peer(world)
    world.exits.tick(1.0, ())
    assert fx.Dial((str(PEER_IP), 6698), gateway) in world.exits.drain()
    world.exits.tick(1.5, (gateway,))
    assert not [e for e in world.exits.drain() if isinstance(e, fx.Dial)]  # dialling
    assert sent(world.exit_verified()) == [session.ExitRequest()]
    effects = world.message(session.ExitGrant(52821))
    target = exits.ExitTarget(gateway, world.peer.wireguard_public, (str(PEER_IP), 52821))
    assert effects == [exits.UseExit(target)]
    # Refused: the plane keeps the refusal and chooses again, now.
    effects = world.message(session.ExitRefused("quota_reached"), now=5.0)
    assert effects == [exits.ChooseGateway()]
    assert world.core.gateways.refusals[gateway] == ("quota_reached", 5.0 + exits.REFUSED_RETRY_S)
    # No gateway chosen any more: the tunnel is pointed nowhere and the session closed.
    world.core.gateways.choice = Choice(None, (), True)
    world.exits.tick(6.0, (gateway,))
    assert world.exits.drain() == [fx.Close(gateway, "switching"), exits.UseExit(None)]


def test_a_gateway_that_gives_no_session_counts_as_refusing_us(tmp_path: Path) -> None:
    """It advertises, and its dials never come up (or its sessions drop before a grant):
    after EXIT_DIAL_TRIES the plane keeps a refusal and chooses again, as for a refusal."""
    world = World(tmp_path, None, share=False)
    gateway = world.peer.node_id
    choose_the_peer(world)
    dials = []
    for second in range(1, 20):
        world.exits.tick(float(second), ())  # each dial failed: no session with it
        effects = world.exits.drain()
        dials += [e for e in effects if isinstance(e, fx.Dial)]
        if exits.ChooseGateway() in effects:
            break
    assert len(dials) == exits.EXIT_DIAL_TRIES
    reason, until = world.core.gateways.refusals[gateway]
    assert reason == "no_exit_session" and until == second + exits.REFUSED_RETRY_S


def test_a_second_member_with_a_users_address_never_takes_its_allowed_ip(
    tmp_path: Path,
) -> None:
    """Issue 28, item 4: WireGuard moves an allowed-ip to the peer that was given it last,
    so admitting a second member certified with an admitted user's address would take the
    user's traffic. The gateway refuses it (``address_in_use``); the user stays admitted.
    A member that another certified first holds the address of in the directory is refused
    even when that one is no user here."""
    from meshd.adapters import identity
    from meshd.core.membership import MembershipCertificate
    from meshd.core.membership.directory import Entry

    world = World(tmp_path, up_health())
    world.exit_verified()
    world.message(session.ExitRequest())
    second = identity.generate(tmp_path / "second")
    world.exits.session_up(second.node_id, session.MESHD_2, 2.0)
    for message in (
        session.Capabilities(session.FEATURES),
        session.Membership(cert(second, str(PEER_IP))),
        session.ExitRequest(),
    ):
        world.exits.message(second.node_id, session.encode(message), 2.0)
    effects = world.exits.drain()
    assert not [e for e in effects if isinstance(e, exits.Admit)]
    assert sent(effects)[-1] == session.ExitRefused("address_in_use")
    assert world.exits.user_of == {PEER_IP: world.peer.node_id}
    assert world.exits.peers[world.peer.node_id].admitted
    # The directory's holder, certified first, is no user here: still refused.
    third = identity.generate(tmp_path / "third")
    holder = MembershipCertificate.decode(cert(third, "10.77.0.7"))
    holder = dataclasses.replace(holder, not_before=holder.not_before - 600)
    world.core.trust.directory.add(Entry(holder.sign(ADMIN)), WALL)
    fourth = identity.generate(tmp_path / "fourth")
    world.exits.session_up(fourth.node_id, session.MESHD_2, 3.0)
    for message in (
        session.Capabilities(session.FEATURES),
        session.Membership(cert(fourth, "10.77.0.7")),
        session.ExitRequest(),
    ):
        world.exits.message(fourth.node_id, session.encode(message), 3.0)
    assert sent(world.exits.drain())[-1] == session.ExitRefused("address_in_use")


def test_a_user_whose_address_a_member_certified_first_holds_is_released(
    tmp_path: Path,
) -> None:
    """The user got in before the certificate of the address's first holder reached us:
    once it does, the user is released (at the next tick, or when the first holder asks),
    and the first holder is admitted in its place."""
    from meshd.adapters import identity
    from meshd.core.membership import MembershipCertificate
    from meshd.core.membership.directory import Entry

    world = World(tmp_path, up_health())
    world.exit_verified()
    world.message(session.ExitRequest())
    first = identity.generate(tmp_path / "first")
    earlier = MembershipCertificate.decode(cert(first, str(PEER_IP)))
    earlier = dataclasses.replace(earlier, not_before=earlier.not_before - 600).sign(ADMIN)
    world.core.trust.directory.add(Entry(earlier), WALL)
    world.exits.session_up(first.node_id, session.MESHD_2, 2.0)
    for message in (
        session.Capabilities(session.FEATURES),
        session.Membership(earlier.encode()),
        session.ExitRequest(),
    ):
        world.exits.message(first.node_id, session.encode(message), 2.0)
    effects = world.exits.drain()
    released = effects.index(exits.Release(world.peer.wireguard_public))
    assert effects.index(exits.Admit(first.wireguard_public, PEER_IP)) > released
    assert fx.Close(world.peer.node_id, "address_in_use") in effects
    assert world.exits.user_of == {PEER_IP: first.node_id}
    # Without a request, the tick finds it.
    world = World(tmp_path / "w2", up_health())
    world.exit_verified()
    world.message(session.ExitRequest())
    world.core.trust.directory.add(Entry(earlier), WALL)
    world.exits.tick(3.0, ())
    effects = world.exits.drain()
    assert exits.Release(world.peer.wireguard_public) in effects
    assert fx.Close(world.peer.node_id, "address_in_use") in effects


def checked_world(tmp_path: Path, *, other_usable: bool = True) -> World:
    """A household without an uplink that checks its exit, granted the peer's exit (and,
    with ``other_usable``, another usable gateway among the candidates)."""
    world = World(tmp_path, None, share=False)
    world.exits = exits.Exits(
        world.core, world.me.signing_key, world.exits.terms, None, checks_exit=True
    )
    gateway = world.peer.node_id
    choose_the_peer(world)
    candidates = [Candidate(gateway, 192, True, "selected")]
    if other_usable:
        candidates.append(Candidate("other", 192, True, "same metric"))
    world.core.gateways.choice = Choice(gateway, tuple(candidates), True)
    world.exits.tick(1.0, ())
    world.exits.drain()
    world.exit_verified()
    world.message(session.ExitGrant(52821), now=1.0)
    world.exits.exit_applied(gateway, 1.0)  # the kernel pointed the tunnel at it
    return world


def checks_started(world: World, now: float) -> list[exits.Effect]:
    world.exits.tick(now, (world.peer.node_id,))
    return [e for e in world.exits.drain() if isinstance(e, exits.CheckExit)]


def test_no_exit_check_runs_without_an_exit_in_use(tmp_path: Path) -> None:
    world = World(tmp_path, None, share=False)
    world.exits = exits.Exits(
        world.core, world.me.signing_key, world.exits.terms, None, checks_exit=True
    )
    choose_the_peer(world)
    for second in range(1, 6):  # dialling, never granted
        assert not checks_started(world, float(second))
    world.core.gateways.choice = Choice(None, (), True)
    assert not checks_started(world, 10.0)
    # Granted, but the household does not check (no target): none either.
    plain = World(tmp_path / "plain", None, share=False)
    choose_the_peer(plain)
    plain.exit_verified()
    plain.message(session.ExitGrant(52821))
    assert not checks_started(plain, 5.0)


def test_an_exit_that_fails_two_checks_in_a_row_counts_as_refusing_us(tmp_path: Path) -> None:
    """Issue 28, item 3: a gateway that grants and then drops its users' traffic passes
    its own uplink check; the household's checks through its exit find it, and it is
    refused (``exit_no_internet``) and another chosen at once."""
    world = checked_world(tmp_path)
    gateway = world.peer.node_id
    assert not checks_started(world, 1.25)  # the tunnel's handshake first
    assert checks_started(world, 1.5) == [exits.CheckExit(gateway, 1)]
    assert not checks_started(world, 1.75)
    assert checks_started(world, 2.0) == [exits.CheckExit(gateway, 2)]
    world.exits.exit_checked(gateway, False, "no answer", 2.5)  # one lost: kept
    world.exits.exit_checked(gateway, True, "connected", 2.6)
    world.exits.exit_checked(gateway, False, "no answer", 3.0)
    assert world.exits.drain() == [] and gateway not in world.core.gateways.refusals
    world.exits.exit_checked("another", False, "no answer", 3.1)  # not the exit we use
    assert world.exits.drain() == []
    world.exits.exit_checked(gateway, False, "no answer", 3.5)
    assert world.exits.drain() == [exits.ChooseGateway()]
    assert world.core.gateways.refusals[gateway] == (
        exits.NO_INTERNET,
        3.5 + exits.REFUSED_RETRY_S,
    )
    assert world.exits.no_internet == {gateway: 1} and world.exits.exit_check is None
    assert not checks_started(world, 4.0)  # no more checks through it


def test_a_gateway_that_fails_again_is_believed_longer_until_a_check_passes(
    tmp_path: Path,
) -> None:
    world = checked_world(tmp_path)
    gateway = world.peer.node_id
    believed = []
    for round_ in range(6):
        now = 100.0 * (round_ + 1)
        world.message(session.ExitGrant(52821), now=now)  # chosen and granted again
        world.exits.exit_check = exits.ExitCheck.granted(gateway, now)
        world.exits.exit_checked(gateway, False, "", now)
        world.exits.exit_checked(gateway, False, "", now)
        believed.append(world.core.gateways.refusals[gateway][1] - now)
    assert believed == [30.0, 60.0, 120.0, 240.0, 480.0, 480.0]
    world.exits.exit_check = exits.ExitCheck.granted(gateway, 900.0)
    world.exits.exit_checked(gateway, True, "connected", 900.0)
    world.exits.exit_checked(gateway, False, "", 901.0)
    world.exits.exit_checked(gateway, False, "", 901.5)
    assert world.core.gateways.refusals[gateway][1] == 901.5 + exits.REFUSED_RETRY_S
    assert world.exits.no_internet == {gateway: 7}


def test_the_only_usable_gateway_is_kept_when_its_checks_fail(tmp_path: Path) -> None:
    """Nowhere else to go (or the check's target is what is down): counted, not refused,
    and checked again."""
    world = checked_world(tmp_path, other_usable=False)
    gateway = world.peer.node_id
    for now in (2.0, 2.5, 3.0, 3.5):
        world.exits.exit_checked(gateway, False, "no answer", now)
    assert world.exits.drain() == []
    assert gateway not in world.core.gateways.refusals
    assert world.exits.no_internet == {gateway: 2}
    assert world.exits.exit_check is not None


def test_a_new_exit_starts_its_checks_afresh(tmp_path: Path) -> None:
    world = checked_world(tmp_path)
    gateway = world.peer.node_id
    world.exits.exit_checked(gateway, False, "no answer", 2.0)
    world.core.gateways.choice = Choice(None, (), True)  # no gateway: checks stop
    world.exits.tick(3.0, ())
    assert world.exits.exit_check is None
    choose_the_peer(world)
    world.exits.tick(4.0, ())
    world.message(session.ExitGrant(52821), now=4.0)
    check = world.exits.exit_check
    assert check is not None and check.failed_in_a_row == 0
    # None before the kernel points the tunnel at it (they would go through the old one,
    # and count against this one), however long that takes.
    assert not checks_started(world, 10.0)
    world.exits.exit_applied("another", 10.0)
    assert not checks_started(world, 11.0)
    world.exits.exit_applied(world.peer.node_id, 11.0)
    assert not checks_started(world, 11.25)
    assert checks_started(world, 11.5) == [exits.CheckExit(world.peer.node_id, 1)]


def test_a_gateway_that_failed_our_checks_is_the_last_resort(tmp_path: Path) -> None:
    """Refused ``exit_no_internet`` while another can be used; chosen again when none can
    (it may have been a gateway whose uplink went down and came back: the failover
    benchmark takes one uplink down after the other), and no longer refused once a check
    through it passes."""
    from meshd.adapters import identity
    from meshd.core.routing.babel import SelectedRoute

    world = checked_world(tmp_path)
    gateways = world.core.gateways
    x = world.peer.node_id
    other = identity.generate(tmp_path / "other")
    other_ip = ipaddress.IPv4Address("10.77.0.9")
    adverts = {
        x: gateways.table.adverts[x],
        other.node_id: advert(world, other.signing_key, other_ip),
    }
    gateways.table.adverts = adverts
    routes = {
        ipaddress.ip_network(f"{a}/32"): SelectedRoute(
            ipaddress.ip_network(f"{a}/32"), "n", b"r", 1, 96
        )
        for a in (PEER_IP, other_ip)
    }
    gateways.refusals[x] = (exits.NO_INTERNET, 100.0)
    gateways.choose(routes, WALL, 50.0)
    assert gateways.choice.selected == other.node_id  # refused while another is usable
    withdrawn = dataclasses.replace(adverts[other.node_id], available=False)
    gateways.table.adverts[other.node_id] = withdrawn
    gateways.choose(routes, WALL, 51.0)
    assert gateways.choice.selected == x and gateways.choice.changed  # the last resort
    gateways.refusals[other.node_id] = ("quota_reached", 100.0)
    gateways.table.adverts[other.node_id] = adverts[other.node_id]
    gateways.choose(routes, WALL, 52.0)
    assert gateways.choice.selected == x and not gateways.choice.changed  # a hard refusal
    world.exits.exit_checked(x, True, "connected", 52.5)
    assert x not in gateways.refusals

"""Write the golden vectors of the session messages added for discovery (LINK, ENDPOINTS,
REVOCATIONS), gateways (GATEWAY, EXIT_*), metering (CLAIM, RECEIPT, RECEIPT_ACK), joining
(JOIN_*), renewal (RENEW_*), the mesh's time (CLOCK), admin rotation (MESH_DEFINITION),
versions (CAPABILITIES, meshd/2), the certificate directory (DIRECTORY_*), private
names (NAME), the community map (MAP), releases (RELEASE, RELEASE_FETCH,
RELEASE_PART) and proposals (PROPOSAL): hex and the JSON lines `meshd decode` prints.
Run from the repo root: ``python -m tests.golden.session.make_vectors``; the tests check
both directions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from meshd.cli.commands.decode import decode
from meshd.core.invites import join_request
from meshd.core.membership import (
    DelegationCertificate,
    MembershipCertificate,
    MeshDefinition,
    MeshTrust,
)
from meshd.core.membership.directory import Entry
from meshd.core.membership.renewal import RenewalIssuer, renew
from meshd.core.membership.rotation import rotate_mesh
from meshd.core.proto import session
from meshd.core.proto.release import ReleaseManifest
from tests.golden.gateway.make_vectors import advert as gateway_advert
from tests.golden.invites import make_vectors as INVITES
from tests.golden.map.make_vectors import record as map_record
from tests.golden.membership import make_vectors as MEMBERSHIP_RECORDS
from tests.golden.receipts import make_vectors as RECEIPTS
from tests.golden.release import make_vectors as RELEASE

HERE = Path(__file__).resolve().parent
MEMBERSHIP = HERE.parent / "membership"


def vectors() -> dict[str, bytes]:
    node = json.loads((MEMBERSHIP / "membership_admin.json").read_text())["json"]["node_id"]
    receipts = RECEIPTS.chain()
    revocation = bytes.fromhex(json.loads((MEMBERSHIP / "revocation_node.json").read_text())["hex"])
    return {
        "link": session.encode(session.Link(51820)),
        "endpoints": session.encode(
            session.Endpoints(
                (
                    session.Endpoint(node, "100.64.0.2", 6697),
                    session.Endpoint(node, "2001:db8::7", 6697),
                )
            )
        ),
        "revocations": session.encode(session.Revocations((revocation,))),
        "gateway": session.encode(session.Gateway(gateway_advert())),
        "exit_request": session.encode(session.ExitRequest()),
        "exit_grant": session.encode(session.ExitGrant(52820)),
        "exit_refused": session.encode(session.ExitRefused("not_taking_new_users")),
        "claim": session.encode(session.Claim(RECEIPTS.EPOCH, 2, 1_234_567, 98_765_432)),
        "claim_throttled": session.encode(
            session.Claim(RECEIPTS.EPOCH, 3, 1_234_567_890, 98_765_432_100, "no_receipts")
        ),
        "receipt": session.encode(session.ReceiptMessage(receipts[1].encode())),
        "receipt_disputed": session.encode(
            session.ReceiptMessage(receipts[2].encode(), "over_tolerance")
        ),
        "receipt_ack": session.encode(session.ReceiptAck(RECEIPTS.EPOCH, 2)),
        **join_vectors(),
        **renewal_vectors(),
        "clock": session.encode(session.Clock(MEMBERSHIP_RECORDS.T0 * 1000 + 123)),
        "mesh_definition": session.encode(session.MeshDefinitionMessage(rotated().encode())),
        # Fixed names, not this build's FEATURES: the bytes must not move when a feature
        # is added. The second is a newer node's, with a name this build does not know.
        "capabilities": session.encode(session.Capabilities(frozenset({"capabilities"}))),
        "name": session.encode(session.Name(bytes(range(16)), "Haus am See")),
        "capabilities_newer": session.encode(
            session.Capabilities(frozenset({"capabilities", "directory", "from_meshd_9"}))
        ),
        **directory_vectors(),
        "map": session.encode(session.MapMessage(map_record(shown=True).encode())),
        "release": session.encode(session.Release(release_manifest().encode())),
        "release_fetch": session.encode(session.ReleaseFetch(7, 32_768, 32_768)),
        "release_part": session.encode(session.ReleasePart(7, 32_768, RELEASE.ARTIFACT[:16])),
        "proposal": session.encode(
            session.ProposalMessage(
                bytes.fromhex(
                    json.loads((MEMBERSHIP / "proposal_revocation.json").read_text())["hex"]
                )
            )
        ),
    }


def release_manifest() -> ReleaseManifest:
    """Release 7 of the release vectors' mesh, signed by their admin key."""
    return RELEASE.signed(RELEASE.ADMIN, RELEASE.MESH_ID, 7, RELEASE.ARTIFACT)


def directory_vectors() -> dict[str, bytes]:
    """The certificate directory's reconciliation: a digest, fingerprints, and two entries
    (an admin's certificate, and a delegate's with its delegation)."""
    records = {name: message for name, (_, message) in MEMBERSHIP_RECORDS.build().items()}
    admin, delegated = records["membership_admin"], records["membership_delegated"]
    delegation = records["delegation"]
    assert isinstance(admin, MembershipCertificate)
    assert isinstance(delegated, MembershipCertificate)
    assert isinstance(delegation, DelegationCertificate)
    entries = (Entry(admin), Entry(delegated, (delegation,)))
    digest = hashlib.sha256(b"".join(sorted(e.fingerprint for e in entries))).digest()
    return {
        "directory_digest": session.encode(session.DirectoryDigest(2, digest)),
        "directory_fingerprints": session.encode(
            session.DirectoryFingerprints(2, tuple(sorted(e.fingerprint for e in entries)))
        ),
        "directory_entries": session.encode(
            session.DirectoryEntries(tuple(e.encoded for e in entries))
        ),
    }


def join_vectors() -> dict[str, bytes]:
    """The invite vectors' admin invite asked for by the test joiner; the delegate's grant
    to the joiner (its certificate with the delegation); a refusal."""
    admin_token, _ = INVITES.tokens()
    joiner = MEMBERSHIP_RECORDS.JOINER
    request = join_request(admin_token, joiner, MEMBERSHIP_RECORDS.JOINER_WG)
    records = {name: message for name, (_, message) in MEMBERSHIP_RECORDS.build().items()}
    return {
        "join_request": session.encode(
            session.JoinRequestMessage(admin_token.invite.encode(), request.encode())
        ),
        "join_granted": session.encode(
            session.JoinGranted(
                records["mesh_definition"].encode(),
                records["membership_delegated"].encode(),
                records["delegation"].encode(),
            )
        ),
        "join_refused": session.encode(
            session.JoinRefused(
                MEMBERSHIP_RECORDS.node_id(joiner),
                "already_redeemed",
                f"invite {admin_token.invite.invite_id.hex()} was redeemed already",
            )
        ),
    }


def renewal_vectors() -> dict[str, bytes]:
    """The joiner asks to renew its delegated certificate 25 days into its 29; the delegate
    renews it (the pure core, at a fixed time and serial); a refusal."""
    records = {name: message for name, (_, message) in MEMBERSHIP_RECORDS.build().items()}
    definition, delegation = records["mesh_definition"], records["delegation"]
    current = records["membership_delegated"]
    assert isinstance(definition, MeshDefinition)
    assert isinstance(delegation, DelegationCertificate)
    assert isinstance(current, MembershipCertificate)
    trust = MeshTrust.from_definition(definition, definition.admins)
    issuer = RenewalIssuer(MEMBERSHIP_RECORDS.DELEGATE, trust, delegation)
    now = MEMBERSHIP_RECORDS.T0 + 25 * 86400
    fresh = renew(issuer, current, (delegation,), now, serial=7)
    return {
        "renew_request": session.encode(
            session.RenewRequest(current.encode(), delegation.encode())
        ),
        "renew_granted": session.encode(session.RenewGranted(fresh.encode(), delegation.encode())),
        "renew_refused": session.encode(
            session.RenewRefused(
                MEMBERSHIP_RECORDS.node_id(MEMBERSHIP_RECORDS.JOINER),
                "revoked",
                "certificate: node revoked",
            )
        ),
    }


def rotated() -> MeshDefinition:
    """The test mesh after its first admin added a third admin key (serial 2)."""
    records = {name: message for name, (_, message) in MEMBERSHIP_RECORDS.build().items()}
    definition = records["mesh_definition"]
    assert isinstance(definition, MeshDefinition)
    new_admin = MEMBERSHIP_RECORDS.node_id(MEMBERSHIP_RECORDS.DELEGATE)
    return rotate_mesh(
        MEMBERSHIP_RECORDS.ADMIN,
        definition,
        add=[new_admin],
        issued_at=MEMBERSHIP_RECORDS.T0 + 30 * 86400,
    )


def main() -> None:
    out = {
        name: {"hex": data.hex(), "json": decode(data, "session")}
        for name, data in vectors().items()
    }
    (HERE / "vectors.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""`meshd decode` on membership records and session messages (Babel has its own tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from meshd.core.proto import session

GOLDEN = Path(__file__).resolve().parents[3] / "golden" / "membership"


def _decode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshd", "decode", *args], capture_output=True, text=True
    )


def test_a_membership_certificate_decodes_to_its_golden_json() -> None:
    vector = json.loads((GOLDEN / "membership_admin.json").read_text())
    res = _decode(vector["hex"])
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == vector["json"]


def test_a_cosigned_definition_decodes_alone_and_in_its_session_message() -> None:
    vector = json.loads((GOLDEN / "cosigned_definition.json").read_text())
    res = _decode(vector["hex"])
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == vector["json"]
    msg = session.encode(session.MeshDefinitionMessage(bytes.fromhex(vector["hex"])))
    res = _decode(msg.hex())
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines == [{"type": "session", "kind": "mesh_definition"}, vector["json"]]


def test_a_cosigned_revocation_decodes_with_its_signatures() -> None:
    from meshd.core.membership import Cosigned, Revocation
    from tests.golden.membership import make_vectors as gen

    vector = json.loads((GOLDEN / "revocation_emergency.json").read_text())
    signed = Cosigned(Revocation.decode(bytes.fromhex(vector["hex"]))).cosign(gen.ADMIN)
    res = _decode(signed.encode().hex())
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert shown["record"] == vector["json"] and shown["record"]["emergency"] is True
    assert [s["signer"] for s in shown["signatures"]] == [gen.node_id(gen.ADMIN)]


def test_a_session_membership_message_shows_both_records() -> None:
    cert = json.loads((GOLDEN / "membership_delegated.json").read_text())
    delegation = json.loads((GOLDEN / "delegation.json").read_text())
    msg = session.encode(
        session.Membership(bytes.fromhex(cert["hex"]), bytes.fromhex(delegation["hex"]))
    )
    res = _decode(msg.hex())
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines == [{"type": "session", "kind": "membership"}, cert["json"], delegation["json"]]


def test_a_session_babel_message_shows_its_tlvs() -> None:
    hello = json.loads((GOLDEN.parent / "babel" / "hello.json").read_text())
    res = _decode("02" + hello["hex"])
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert lines[0] == {"type": "session", "kind": "babel"}
    assert [line["type"] for line in lines[1:]] == [t["type"] for t in hello["tlvs"]]


def test_a_tampered_certificate_is_one_line_with_a_reason() -> None:
    vector = json.loads((GOLDEN / "membership_admin.json").read_text())
    res = _decode(vector["hex"][:-2], "--kind", "membership")
    assert res.returncode == 1
    assert res.stderr.startswith("meshd decode: malformed: ") and res.stderr.count("\n") == 1


def _session_from_lines(lines: list[dict[str, object]]) -> session.SessionMessage:
    """Build a session message from the JSON lines `meshd decode` prints for it."""
    from meshd.core.membership import message_from_json

    head, rest = lines[0], lines[1:]
    if head["kind"] == "join_request":
        from meshd.core.invites import Invite, JoinRequest

        invite, request = Invite.from_json(rest[0]), JoinRequest.from_json(rest[1])
        return session.JoinRequestMessage(invite.encode(), request.encode())
    if head["kind"] == "join_granted":
        records = [message_from_json(r).encode() for r in rest]
        return session.JoinGranted(*records)
    if head["kind"] == "join_refused":
        return session.JoinRefused(str(head["node_id"]), str(head["reason"]), str(head["detail"]))
    if head["kind"] in ("renew_request", "renew_granted"):
        records = [message_from_json(r).encode() for r in rest]
        kind = session.RenewRequest if head["kind"] == "renew_request" else session.RenewGranted
        return kind(*records)
    if head["kind"] == "renew_refused":
        return session.RenewRefused(str(head["node_id"]), str(head["reason"]), str(head["detail"]))
    if head["kind"] == "proposal":
        from meshd.core.membership.proposals import Proposal

        return session.ProposalMessage(Proposal.from_json(rest[0]).encode())
    if head["kind"] == "mesh_definition":
        return session.MeshDefinitionMessage(message_from_json(rest[0]).encode())
    if head["kind"] == "name":
        return session.Name(bytes.fromhex(str(head["salt"])), str(head["name"]))
    if head["kind"] == "clock":
        return session.Clock(int(head["unix_ms"]))  # type: ignore[call-overload]
    if head["kind"] == "capabilities":
        return session.Capabilities(frozenset(head["features"]))  # type: ignore[arg-type]
    if head["kind"] == "directory_digest":
        return session.DirectoryDigest(int(head["count"]), bytes.fromhex(str(head["digest"])))  # type: ignore[call-overload]
    if head["kind"] == "directory_fingerprints":
        prints = tuple(bytes.fromhex(f) for f in head["fingerprints"])  # type: ignore[attr-defined]
        return session.DirectoryFingerprints(int(head["total"]), prints)  # type: ignore[call-overload]
    if head["kind"] == "directory_entries":
        from meshd.core.membership.directory import Entry

        grouped: list[list[Any]] = []
        for record in rest:  # a certificate, then its delegation when a delegate issued it
            message = message_from_json(record)
            if record["type"] == "membership_certificate":
                grouped.append([message])
            else:
                grouped[-1].append(message)
        entries = (Entry(cert, tuple(chain)) for cert, *chain in grouped)
        return session.DirectoryEntries(tuple(e.encoded for e in entries))
    if head["kind"] == "link":
        return session.Link(int(head["wireguard_port"]))  # type: ignore[call-overload]
    if head["kind"] == "exit_request":
        return session.ExitRequest()
    if head["kind"] == "exit_grant":
        return session.ExitGrant(int(head["wireguard_port"]))  # type: ignore[call-overload]
    if head["kind"] == "exit_refused":
        return session.ExitRefused(str(head["reason"]))
    if head["kind"] == "claim":
        throttled = head["throttled"]
        return session.Claim(
            *(int(head[k]) for k in ("epoch", "seq", "relayed_for_bytes", "relayed_to_bytes")),  # type: ignore[call-overload]
            throttled=str(throttled) if throttled else "",
        )
    if head["kind"] == "receipt":
        from meshd.core.receipts import Receipt

        fields = {k: v for k, v in rest[0].items() if k not in ("type", "version")}
        dispute = head["dispute"]
        return session.ReceiptMessage(
            Receipt.from_json(fields).encode(), str(dispute) if dispute else ""
        )
    if head["kind"] == "receipt_ack":
        return session.ReceiptAck(int(head["epoch"]), int(head["seq"]))  # type: ignore[call-overload]
    if head["kind"] == "gateway":
        from meshd.core.proto.gateway import GatewayAdvert

        fields = {k: v for k, v in rest[0].items() if k != "type"}
        return session.Gateway(GatewayAdvert.from_json(fields).encode())
    if head["kind"] == "map":
        from meshd.core.proto.map_record import MapRecord

        return session.MapMessage(MapRecord.from_json(rest[0]).encode())
    if head["kind"] == "release":
        from meshd.core.proto.release import ReleaseManifest

        return session.Release(ReleaseManifest.from_json(rest[0]).encode())
    if head["kind"] == "release_fetch":
        return session.ReleaseFetch(int(head["serial"]), int(head["offset"]), int(head["length"]))  # type: ignore[call-overload]
    if head["kind"] == "release_part":
        data = bytes.fromhex(str(head["data"]))
        return session.ReleasePart(int(head["serial"]), int(head["offset"]), data)  # type: ignore[call-overload]
    if head["kind"] == "endpoints":
        return session.Endpoints(
            tuple(session.Endpoint(str(e["node_id"]), str(e["host"]), int(e["port"])) for e in rest)  # type: ignore[call-overload]
        )
    return session.Revocations(tuple(message_from_json(r).encode() for r in rest))


def test_session_messages_match_their_golden_vectors_both_ways() -> None:
    vectors = json.loads((GOLDEN.parent / "session" / "vectors.json").read_text())
    assert set(vectors) == {
        "link",
        "endpoints",
        "revocations",
        "gateway",
        "exit_request",
        "exit_grant",
        "exit_refused",
        "claim",
        "claim_throttled",
        "receipt",
        "receipt_disputed",
        "receipt_ack",
        "join_request",
        "join_granted",
        "join_refused",
        "renew_request",
        "renew_granted",
        "renew_refused",
        "clock",
        "mesh_definition",
        "capabilities",
        "capabilities_newer",
        "directory_digest",
        "directory_fingerprints",
        "directory_entries",
        "name",
        "map",
        "release",
        "release_fetch",
        "release_part",
        "proposal",
    }
    for name, vector in vectors.items():
        res = _decode(vector["hex"])
        assert res.returncode == 0, (name, res.stderr)
        assert [json.loads(line) for line in res.stdout.splitlines()] == vector["json"], name
        assert session.encode(_session_from_lines(vector["json"])).hex() == vector["hex"], name


def test_a_beacon_decodes_to_its_golden_json() -> None:
    vector = json.loads((GOLDEN.parent / "beacon" / "beacon.json").read_text())
    res = _decode(vector["hex"])
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"type": "beacon", **vector["json"]}
    tampered = vector["hex"][:-2] + ("00" if vector["hex"][-2:] != "00" else "01")
    bad = _decode(tampered)
    assert bad.returncode == 1 and bad.stderr.startswith("meshd decode: bad_signature: ")


def test_an_invite_and_a_join_request_decode_to_their_golden_json() -> None:
    for name in ("invite_admin", "join_request"):
        vector = json.loads((GOLDEN.parent / "invites" / f"{name}.json").read_text())
        res = _decode(vector["hex"])
        assert res.returncode == 0, (name, res.stderr)
        assert json.loads(res.stdout) == vector["json"], name


def test_a_map_record_decodes_to_its_golden_json_and_a_tampered_one_is_refused() -> None:
    for name in ("record", "record_private"):
        vector = json.loads((GOLDEN.parent / "map" / f"{name}.json").read_text())
        res = _decode(vector["hex"])
        assert res.returncode == 0, (name, res.stderr)
        assert json.loads(res.stdout) == vector["json"], name
    bad = _decode(vector["hex"] + "00")
    assert bad.returncode == 1 and bad.stderr.startswith("meshd decode: malformed: ")

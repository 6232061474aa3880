"""Write the release manifest's golden vectors, signed with a fixed test key standing for the
mesh's admin, and co-signed by a second (a mesh whose threshold is 2). From the repo root:
python -m tests.golden.release.make_vectors"""

from __future__ import annotations

import hashlib
from pathlib import Path

from nacl.signing import SigningKey

from meshd.core.keys import node_id_from_public
from meshd.core.membership.cosigned import Cosigned
from meshd.core.membership.messages import NO_SIGNATURE
from meshd.core.proto.release import ReleaseManifest
from tests.golden import vectors

HERE = Path(__file__).resolve().parent
ADMIN = SigningKey(bytes(range(32)))  # a fixed test key
SECOND = SigningKey(bytes(range(1, 33)))  # another admin's
MESH_ID = bytes.fromhex("a2e8efa88f9a2fc610601fc30b9f0e1d")
ARTIFACT = b"meshd 0.2.0, as a wheel would hold it\n"


def signed(key: SigningKey, mesh_id: bytes, serial: int, artifact: bytes) -> ReleaseManifest:
    """``key``'s manifest for ``artifact``: version 0.2.0, a day between stages, 10 minutes
    to come up healthy; for the vectors and the tests."""
    return ReleaseManifest(
        mesh_id=mesh_id,
        issuer=node_id_from_public(bytes(key.verify_key)),
        serial=serial,
        issued_at=1767225600,
        meshd_version="0.2.0",
        artifact_name="meshd-0.2.0-py3-none-any.whl",
        artifact_size=len(artifact),
        artifact_sha256=hashlib.sha256(artifact).digest(),
        stage_interval_s=86_400,
        health_window_s=600,
        signature=NO_SIGNATURE,
    ).sign(key)


def main() -> None:
    m = signed(ADMIN, MESH_ID, 7, ARTIFACT)
    what = "a release manifest: meshd 0.2.0 as a wheel, a day between stages"
    both = Cosigned(m).cosign(SECOND)
    what2 = "the same release co-signed by a second admin (a mesh whose threshold is 2)"
    vectors.write(
        HERE,
        {
            "manifest.json": vectors.render(what, m.encode().hex(), m.to_json()),
            "manifest_cosigned.json": vectors.render(what2, both.encode().hex(), both.to_json()),
        },
    )


if __name__ == "__main__":
    main()

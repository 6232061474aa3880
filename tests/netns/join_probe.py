"""A joining node that skips its own checks, for the netns join tests (run inside a node's
namespace through ``testbed exec``):

    python join_probe.py TOKEN_FILE --node-id=NODE_ID HOST:PORT [--alter]

shows the token in TOKEN_FILE to the bootstrap node NODE_ID at HOST:PORT with meshd's own
join client (meshd.daemon.joining.JoinClient: QUIC, a JOIN_REQUEST), for fresh keys that no admin
signed, and prints one JSON object: the answer (``granted``, or ``refused`` with its reason
and detail), or how the session ended. Unlike ``meshd run`` it checks only the token's
framing and signature (``parse_token``), not its time or issuer, so what answers is the
mesh: the bootstrap node's checks, the issuer's store.
``--alter`` changes the invite's name without its issuer's signature (the proof is made
for the altered bytes, as anyone holding the secret could).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's meshd

from nacl.public import PrivateKey  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from meshd.core.invites import BootstrapEndpoint, InviteToken, join_request, parse_token  # noqa: E402
from meshd.core.proto import session  # noqa: E402
from meshd.core.transport.certs import node_certificate  # noqa: E402
from meshd.daemon.joining import JoinClient  # noqa: E402


async def probe(args: argparse.Namespace) -> dict[str, object]:
    token = parse_token(Path(args.token_file).read_text())  # its time is not checked
    if args.alter:
        token = InviteToken(dataclasses.replace(token.invite, name="mallory"), token.secret)
    key = SigningKey.generate()
    wireguard = bytes(PrivateKey.generate().public_key)
    request = join_request(token, key, wireguard)
    message = session.JoinRequestMessage(token.invite.encode(), request.encode())
    endpoint = BootstrapEndpoint.from_address(args.node_id, args.address)
    outcome = await JoinClient(node_certificate(key)).attempt((endpoint,), message)
    answer = outcome.answer
    if isinstance(answer, session.JoinGranted):
        return {"answer": "granted"}
    if isinstance(answer, session.JoinRefused):
        return {"answer": "refused", "reason": answer.reason, "detail": answer.detail}
    return {"answer": None, "closed": outcome.closed, "failures": outcome.failures}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("token_file")
    # An option, given as --node-id=ID: a node id begins with "-" once in 64, and argparse
    # would take it, standing alone, for an option.
    p.add_argument("--node-id", required=True)
    p.add_argument("address", metavar="HOST:PORT")
    p.add_argument("--alter", action="store_true")
    print(json.dumps(asyncio.run(probe(p.parse_args()))))


if __name__ == "__main__":
    main()

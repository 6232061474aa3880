"""Neighbour sessions over QUIC (the control plane, DESIGN.md "Planes").

- ``certs``: a node's self-signed Ed25519 certificate and the node id inside a peer's.
- ``framing``: length-prefixed control frames on the session's one bidirectional stream.
- ``session``: a sans-IO session around aioquic's ``QuicConnection`` (mutual auth by node id,
  framing, datagrams, keep-alive); bytes, events and ``now`` in, datagrams and deadlines out.
- ``udp``: the thin asyncio adapter: one UDP socket per node for dialled and accepted sessions.
- ``_aioquic_private``: every use of aioquic private API, in one place.
"""

"""Pending seqno requests of the Babel core (RFC 8966 3.8.2.3): duplicate suppression and
resending with doubling delays until an Update with the requested seqno arrives."""

from __future__ import annotations

from meshd.core.proto.babel import AE_IPV4, AE_IPV6, SeqnoRequest, seqno_less
from meshd.core.routing.babel_tables import BabelParams, IPNetwork, NeighbourId, PendingRequest


def ae_of(prefix: IPNetwork) -> int:
    return AE_IPV4 if prefix.version == 4 else AE_IPV6


class SeqnoRequests:
    def __init__(self, params: BabelParams) -> None:
        self._params = params
        self._pending: dict[tuple[IPNetwork, bytes], PendingRequest] = {}

    def start(
        self,
        prefix: IPNetwork,
        router_id: bytes,
        seqno: int,
        hop_count: int,
        targets: tuple[NeighbourId, ...],
        origin: NeighbourId | None,
        now: float,
    ) -> SeqnoRequest | None:
        """Record a request to send (or forward) now; None if an equal or newer one for
        the same source is already pending (RFC 8966 3.8.2.3: not sent again)."""
        key = (prefix, router_id)
        existing = self._pending.get(key)
        if existing is not None and not seqno_less(existing.seqno, seqno):
            return None
        p = self._params
        pending = PendingRequest(
            seqno=seqno,
            hop_count=hop_count,
            targets=targets,
            origin=origin,
            resends_left=p.request_resends,
            resend_delay=p.request_resend_s,
            next_resend=now + p.request_resend_s,
        )
        self._pending[key] = pending
        return self._tlv(prefix, router_id, pending)

    def satisfy(self, prefix: IPNetwork, router_id: bytes, seqno: int) -> None:
        """An Update of this source with ``seqno`` arrived: requests up to it are done."""
        pending = self._pending.get((prefix, router_id))
        if pending is not None and not seqno_less(seqno, pending.seqno):
            del self._pending[(prefix, router_id)]

    def due(self, now: float) -> list[tuple[SeqnoRequest, tuple[NeighbourId, ...]]]:
        """Requests to resend now (babeld: the delay doubles each time); requests that
        were resent often enough are dropped."""
        out: list[tuple[SeqnoRequest, tuple[NeighbourId, ...]]] = []
        for key, pending in list(self._pending.items()):
            if pending.next_resend > now:
                continue
            if pending.resends_left <= 0:
                del self._pending[key]
                continue
            pending.resends_left -= 1
            pending.resend_delay *= 2
            pending.next_resend = now + pending.resend_delay
            out.append((self._tlv(key[0], key[1], pending), pending.targets))
        return out

    def deadline(self) -> float | None:
        return min((p.next_resend for p in self._pending.values()), default=None)

    @staticmethod
    def _tlv(prefix: IPNetwork, router_id: bytes, pending: PendingRequest) -> SeqnoRequest:
        return SeqnoRequest(
            ae=ae_of(prefix),
            prefix=prefix,
            seqno=pending.seqno,
            hop_count=pending.hop_count,
            router_id=router_id,
        )

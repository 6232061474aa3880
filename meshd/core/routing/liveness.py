"""Link liveness from passive signals (pure).

WireGuard's persistent keepalive makes every live peer send at least one packet per
keepalive interval, so a receive counter that stops growing for longer than that means the
tunnel stopped carrying packets, whatever the underlay or a control session says. The
counter is polled a few times a second by the adapter and fed in here with the time.

A keepalive can come late (a busy wireguard-go, a bulk transfer in the other direction), so
a link silent for ``probe_after_s`` is asked once, with an echo through the tunnel that a
live peer's kernel answers at once (``wants_probe``); only a link still silent at
``dead_after_s`` is down. That lets ``dead_after_s`` sit close to the keepalive interval
(fast failover) without calling a late keepalive a dead link. A link is only called down
at a reading after the one that sent its probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LinkState(StrEnum):
    CONNECTING = "connecting"  # never heard from since we started watching
    UP = "up"
    DOWN = "down"


@dataclass
class Liveness:
    dead_after_s: float
    probe_after_s: float | None = None  # None: never probe
    state: LinkState = LinkState.CONNECTING
    last_rx_bytes: int | None = None
    last_heard: float | None = None  # when the counter last grew
    probed_at: float | None = None  # the probe of the current silence, if sent

    def wants_probe(self, now: float) -> bool:
        """True once per silence: an up link silent for ``probe_after_s``."""
        if (
            self.probe_after_s is None
            or self.state is not LinkState.UP
            or self.last_heard is None
            or now - self.last_heard < self.probe_after_s
            or (self.probed_at is not None and self.probed_at >= self.last_heard)
        ):
            return False
        self.probed_at = now
        return True

    def observe(self, rx_bytes: int, now: float) -> LinkState | None:
        """Feed one counter reading; return the new state when it changed."""
        previous = self.last_rx_bytes
        self.last_rx_bytes = rx_bytes
        # A counter that went backwards was reset (interface recreated): the packets that
        # reset it are not a sign of life, only a new baseline.
        if previous is not None and rx_bytes > previous:
            self.last_heard = now
            return self._set(LinkState.UP)
        return self._expire(now, probing=self.probe_after_s is not None)

    def check(self, now: float) -> LinkState | None:
        """Expire the link without a reading (e.g. the interface could not be read)."""
        return self._expire(now, probing=False)

    def _expire(self, now: float, probing: bool) -> LinkState | None:
        if (
            self.state is not LinkState.UP
            or self.last_heard is None
            or now - self.last_heard <= self.dead_after_s
        ):
            return None
        if probing and not self._probed_before(now):
            return None
        return self._set(LinkState.DOWN)

    def _probed_before(self, now: float) -> bool:
        """The probe of this silence went out at an earlier reading, as it does when
        readings come on time. A late reading (a starved process) that finds a long silence
        sends the probe then and waits a reading for it, rather than calling a live link
        down on a silence of its own making."""
        assert self.last_heard is not None
        return self.probed_at is not None and self.last_heard <= self.probed_at < now

    def silent_for(self, now: float) -> float | None:
        return None if self.last_heard is None else now - self.last_heard

    def _set(self, state: LinkState) -> LinkState | None:
        if state is self.state:
            return None
        self.state = state
        return state

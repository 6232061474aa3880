"""Link liveness from passive signals (pure).

Two rules, both fed by counters the adapter polls a few times a second:

- **Busy**: a flow into a live tunnel gets something back (ACKs, replies, at least an
  echo), and a peer that sent at every reading (a stream: ``STREAM_READINGS``) does not
  stop for nothing. When the tunnel's data sent (its interface's tx counter: no keepalive
  in it under wireguard-go; under the kernel a keepalive is in it, as a lone send,
  meshd.adapters.net.if_stats) grows at a second reading within ``FLOW_WINDOW_S`` with
  nothing received since the first (one send alone, a periodic probe or a flow's last ACK,
  may have no answer), or a stream stops, and nothing was received for
  ``suspect_after_s`` (longer than one poll: a reply we send to what just came in is no
  doubt), the link is in doubt from the first reading of that silence that expected
  something. From the next reading on it is asked with echoes through the tunnel, which a
  live peer's kernel answers at once (``wants_probe``); still nothing ``answer_within_s``
  after the doubt began, it is down. A flow into a link that died, busy or idle, is
  noticed within about half a second at both ends (the far end by its stream stopping;
  the daemon reads a ``busy`` link's counters every 0.1 s), and a periodic message costs
  no echo. A flow that only goes one way gets nothing back
  but echoes: each doubt an echo answers doubles the silence the next one needs, up to
  ``MAX_SUSPECT_S``, until something comes back unasked.
- **Idle**: a link that carries nothing need not prove itself every second (idle links
  nearly silent): WireGuard's persistent keepalive makes a live peer send at least once
  per keepalive interval (25 s by default, what holds a NAT mapping). A receive counter
  silent for ``probe_after_s`` gets one echo, and a link still silent at ``dead_after_s``
  is down. A link that died while idle is found by the busy rule as soon as something
  is sent into it, and by this one at the latest.

A link is only called down at a reading after the one that sent its probe, so a late
reading (a starved poller) that finds a long silence asks first rather than calling a live
link down on a silence of its own making.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

STREAM_READINGS = 3  # something received at this many readings in a row: a stream
FLOW_WINDOW_S = 2.0  # two sending readings this close, nothing heard between: a flow
MAX_SUSPECT_S = 2.0  # the longest silence a one-way flow's doubts back off to
ECHOES_PER_PROBE = 3  # on a lossy link one lost echo, or two, call nothing down
DOWN_PROBE_S = 1.0  # a down or connecting link is asked this often whether it is there


class LinkState(StrEnum):
    CONNECTING = "connecting"  # never heard from since we started watching
    UP = "up"
    DOWN = "down"


@dataclass
class Liveness:
    dead_after_s: float  # idle: nothing received for this long
    probe_after_s: float | None = None  # idle: one echo at this silence; None: never
    answer_within_s: float | None = None  # busy: sent, nothing back; None: no busy rule
    suspect_after_s: float = 0.375  # busy: silence at a send that starts a doubt
    state: LinkState = LinkState.CONNECTING
    last_rx_bytes: int | None = None
    last_heard: float | None = None  # when the counter last grew
    probed_at: float | None = None  # the latest probe of the current silence, if sent
    last_sent: int | None = None  # the tunnel's data sent, at the last reading
    unanswered_at: float | None = None  # the last reading that saw a send and no answer
    read_at: float | None = None  # the last reading
    heard_in_a_row: int = 0  # readings in a row, up to the last heard, that found something
    suspect_s: float | None = None  # backed off from suspect_after_s by answered doubts
    doubt_since: float | None = None  # the first reading of a silence that saw a send
    busy: bool = False  # the last reading saw a send, a stream or a doubt: read often

    def wants_probe(self, now: float) -> bool:
        """True at every reading of a doubt (data sent, nothing back), once per silence of
        ``probe_after_s`` on an idle link, and every ``DOWN_PROBE_S`` on a down or
        never-heard one (its peer, idle too, may send nothing for a keepalive interval)."""
        if self.state is not LinkState.UP or self.last_heard is None:
            # Down, or not heard since we started watching (a restart: the peer's tunnel
            # may stay quiet for a keepalive interval): asked whether it is there.
            due = self.probed_at is None or now - self.probed_at >= DOWN_PROBE_S
        elif self.doubt_since is not None:
            due = self.doubt_since < now and (self.probed_at is None or self.probed_at < now)
        else:
            due = (
                self.probe_after_s is not None
                and now - self.last_heard >= self.probe_after_s
                and not (self.probed_at is not None and self.probed_at >= self.last_heard)
            )
        if due:
            self.probed_at = now
        return due

    def echoes(self) -> int:
        """How many echoes a probe sends: an up link's may decide it is down, so a lost
        echo must not; a down or never-heard link is only asked whether it is there."""
        return ECHOES_PER_PROBE if self.state is LinkState.UP else 1

    def observe(self, rx_bytes: int, now: float, sent: int | None = None) -> LinkState | None:
        """Feed one reading (bytes received; ``sent``: the tunnel's data sent, None when
        unknown); return the new state when it changed."""
        previous, self.last_rx_bytes = self.last_rx_bytes, rx_bytes
        sent_more = sent is not None and self.last_sent is not None and sent > self.last_sent
        self.last_sent = sent
        previous_reading, self.read_at = self.read_at, now
        # A counter that went backwards was reset (interface recreated): the packets that
        # reset it are not a sign of life, only a new baseline.
        if previous is not None and rx_bytes > previous:
            in_a_row = self.last_heard is not None and self.last_heard == previous_reading
            self.heard_in_a_row = self.heard_in_a_row + 1 if in_a_row else 1
            # A doubt that was answered (a one-way flow: only echoes come back) backs the
            # next one off; anything heard unasked brings it back.
            self.suspect_s = (
                min(2 * self._suspect_s(), MAX_SUSPECT_S) if self.doubt_since is not None else None
            )
            self.last_heard, self.doubt_since, self.unanswered_at = now, None, None
            self.busy = sent_more or self.heard_in_a_row >= STREAM_READINGS
            return self._set(LinkState.UP)
        stream = self.heard_in_a_row >= STREAM_READINGS
        if (sent_more or stream) and self.state is LinkState.UP:
            assert self.last_heard is not None  # up: heard at least once
            # One send alone (a periodic probe, the last ACK of a flow) may have no answer;
            # a second within FLOW_WINDOW_S of it, still unanswered, is a flow.
            flow = self.unanswered_at is not None and now - self.unanswered_at <= FLOW_WINDOW_S
            silent = now - self.last_heard >= self._suspect_s()
            if self.doubt_since is None and silent and (stream or flow):
                # Expected at the reading before too, nothing since: the doubt began there.
                before = self.unanswered_at is not None and self.unanswered_at == previous_reading
                self.doubt_since = self.unanswered_at if before else now
            self.unanswered_at = now
        self.busy = sent_more or stream or self.doubt_since is not None
        probing = self.probe_after_s is not None or self.answer_within_s is not None
        return self._expire(now, probing=probing)

    def check(self, now: float) -> LinkState | None:
        """Expire the link without a reading (e.g. the interface could not be read)."""
        return self._expire(now, probing=False)

    def _expire(self, now: float, probing: bool) -> LinkState | None:
        if self.state is not LinkState.UP or self.last_heard is None:
            return None
        unanswered = (
            self.answer_within_s is not None
            and self.doubt_since is not None
            and now - self.doubt_since >= self.answer_within_s
        )
        if not unanswered and now - self.last_heard <= self.dead_after_s:
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

    def _suspect_s(self) -> float:
        return self.suspect_after_s if self.suspect_s is None else self.suspect_s

    def silent_for(self, now: float) -> float | None:
        return None if self.last_heard is None else now - self.last_heard

    def _set(self, state: LinkState) -> LinkState | None:
        if state is self.state:
            return None
        self.state = state
        self.doubt_since = self.unanswered_at = None
        return state

"""The fair-gateways benchmark's pure helper (netns-testbed/benchmarks/fair.py): reading
ping's replies."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
TESTBED_DIR = REPO / "netns-testbed"
sys.path[:0] = [p for p in (str(REPO), str(TESTBED_DIR)) if p not in sys.path]

from benchmarks.fair import median_rtt_ms  # noqa: E402

PING = """PING 203.0.113.1 (203.0.113.1) 56(84) bytes of data.
64 bytes from 203.0.113.1: icmp_seq=1 ttl=62 time=1.20 ms
64 bytes from 203.0.113.1: icmp_seq=2 ttl=62 time=3.4 ms
64 bytes from 203.0.113.1: icmp_seq=4 ttl=62 time=2.10 ms

--- 203.0.113.1 ping statistics ---
4 packets transmitted, 3 received, 25% packet loss, time 301ms
rtt min/avg/max/mdev = 1.200/2.233/3.400/0.900 ms
"""


def test_the_median_of_the_replies() -> None:
    assert median_rtt_ms(PING, 4) == 2.10


def test_too_few_replies_is_no_measurement() -> None:
    with pytest.raises(RuntimeError, match="3 of 8 answered"):
        median_rtt_ms(PING, 8)
    with pytest.raises(RuntimeError, match="0 of 4"):
        median_rtt_ms("connect: Network is unreachable\n", 4)

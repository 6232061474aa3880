"""The flows to mesh addresses that leave by a mesh link, as the kernel's connection
tracking counts them (kernel thread only), for black-hole detection
(meshd.core.routing.progress).

The firewall marks such flows at their first packet (meshd.adapters.net.firewall.FLOW_MARK); a dump
asks the kernel for marked flows only, so a gateway with thousands of LAN flows to the
internet reads just the mesh's. Packet counts need ``nf_conntrack_acct`` (set by
meshd.adapters.net.sysctl); a flow that began before it was set has none and is left out.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pyroute2 import NFCTSocket

from meshd.adapters.net.firewall import FLOW_MARK
from meshd.core.routing.progress import FlowSample


def _sample(msg: Any) -> FlowSample | None:
    orig = msg.get_attr("CTA_TUPLE_ORIG")
    sent, answered = msg.get_attr("CTA_COUNTERS_ORIG"), msg.get_attr("CTA_COUNTERS_REPLY")
    if orig is None or sent is None or answered is None:
        return None
    ip, proto = orig.get_attr("CTA_TUPLE_IP"), orig.get_attr("CTA_TUPLE_PROTO")
    address = ip.get_attr("CTA_IP_V4_DST") or ip.get_attr("CTA_IP_V6_DST")
    if address is None or proto is None:
        return None
    return FlowSample(
        flow_id=int(msg.get_attr("CTA_ID") or 0),
        protocol=int(proto.get_attr("CTA_PROTO_NUM") or 0),
        destination=ipaddress.ip_address(address),
        sent=int(sent.get_attr("CTA_COUNTERS_PACKETS") or 0),
        answered=int(answered.get_attr("CTA_COUNTERS_PACKETS") or 0),
    )


class FlowReader:
    def __init__(self) -> None:
        self._socket: NFCTSocket | None = None

    def read(self) -> list[FlowSample]:
        """Every marked flow now; OSError (netlink's) when the kernel cannot be asked."""
        if self._socket is None:
            self._socket = NFCTSocket()
        samples = (_sample(m) for m in self._socket.dump(mark=FLOW_MARK, mark_mask=FLOW_MARK))
        return [s for s in samples if s is not None]

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

"""Finding other meshd nodes with no configuration: signed beacons on shared LAN segments.

``beacons`` is the pure core (when to send, what a received beacon means); the asyncio
adapter that owns the sockets is ``beacon_socket`` (imported on its own: it is not pure).
"""

from meshd.core.discovery.beacons import (
    BeaconScheduler,
    BeaconSettings,
    BeaconState,
    Discovered,
    DiscoveryReason,
    Rejected,
)

__all__ = [
    "BeaconScheduler",
    "BeaconSettings",
    "BeaconState",
    "Discovered",
    "DiscoveryReason",
    "Rejected",
]

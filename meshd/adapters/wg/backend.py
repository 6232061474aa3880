"""The interface every WireGuard backend implements, and the choice between them."""

from __future__ import annotations

from typing import Protocol

from meshd.adapters.wg.model import DeviceStatus, DeviceUpdate


class WireGuardBackend(Protocol):
    name: str  # "kernel", "userspace" or "fake"

    def create(self, ifname: str) -> None:
        """Create the interface (down, no address). Raise WireGuardError if it exists."""

    def delete(self, ifname: str) -> None:
        """Delete the interface; deleting one that is gone is not an error."""

    def exists(self, ifname: str) -> bool: ...

    def list_interfaces(self, prefix: str) -> list[str]:
        """Names of this backend's live interfaces starting with ``prefix`` (for adoption)."""

    def configure(self, ifname: str, update: DeviceUpdate) -> None: ...

    def show(self, ifname: str) -> DeviceStatus: ...

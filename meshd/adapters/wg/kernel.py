"""WireGuard in the kernel, through pyroute2: rtnetlink for the links, genetlink to configure.

pyroute2 is imported on first use only, so that the CLI starts fast. Both of its objects can
be handed in, which is how the unit tests run this module on a kernel without WireGuard.

Two gaps in pyroute2 0.9's ``WireGuard.set`` shape the code: it takes one peer per call, and
it cannot send WGDEVICE_F_REPLACE_PEERS, so ``replace_peers`` removes the current peers one
by one first (the same end state, but not atomic). It also cannot send an IPv6 scope id, so
link-local endpoints are refused rather than silently sent without their interface.
"""

from __future__ import annotations

import binascii
import errno
import ipaddress
import os
from base64 import b64decode, b64encode
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from meshd.adapters.wg.model import (
    DeviceStatus,
    DeviceUpdate,
    PeerStatus,
    PeerUpdate,
    WireGuardError,
    check_ifname,
    check_update,
    normalise_prefix,
)

LINK_KIND = "wireguard"


class IPRouteLike(Protocol):
    """The part of ``pyroute2.IPRoute`` this backend uses."""

    def link(self, command: str, **kwarg: Any) -> Any: ...


class GenlWireGuardLike(Protocol):
    """The part of ``pyroute2.WireGuard`` this backend uses (keys in base64 there)."""

    def set(
        self,
        interface: str,
        listen_port: int | None = None,
        fwmark: int | None = None,
        private_key: str | None = None,
        peer: dict[str, Any] | None = None,
    ) -> Any: ...

    def info(self, interface: str) -> Sequence[Any]: ...


# --- pure mapping between the neutral model and pyroute2's shapes --------------------------


def peer_request(peer: PeerUpdate) -> dict[str, Any]:
    """The ``peer`` dict of ``pyroute2.WireGuard.set`` for one PeerUpdate."""
    request: dict[str, Any] = {"public_key": b64encode(peer.public_key).decode("ascii")}
    if peer.remove:
        # pyroute2 sends nothing but WGPEER_F_REMOVE_ME then, which the kernel ignores for
        # an unknown peer: the same outcome as update_only + remove.
        request["remove"] = True
        return request
    if peer.update_only:
        request["update_only"] = True
    if peer.endpoint is not None:
        host, port = peer.endpoint
        address = ipaddress.ip_address(host)
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise ValueError(f"pyroute2 cannot send an IPv6 scope id: endpoint {host!r}")
        request["endpoint_addr"] = str(address)
        request["endpoint_port"] = port
    if peer.persistent_keepalive_s is not None:
        request["persistent_keepalive"] = peer.persistent_keepalive_s
    if peer.allowed_ips is not None:
        request["replace_allowed_ips"] = True
        if peer.allowed_ips:  # an empty list would be an empty nested attribute: leave it out
            request["allowed_ips"] = [normalise_prefix(p) for p in peer.allowed_ips]
    return request


def device_status_from_info(ifname: str, messages: Sequence[Any]) -> DeviceStatus:
    """The device described by the messages of ``pyroute2.WireGuard.info``.

    A large device is dumped over several messages, and a peer whose allowed ips do not fit
    is continued in the next one with only its public key and the rest of its allowed ips
    (the kernel's get_peer; wireguard-tools merges them the same way).
    """
    if not messages:
        raise WireGuardError(f"{ifname}: empty WireGuard dump", errno.EPROTO)
    try:
        first = messages[0]
        public_key = first.get_attr("WGDEVICE_A_PUBLIC_KEY")
        peers: list[PeerStatus] = []
        for message in messages:
            for peer_nla in message.get_attr("WGDEVICE_A_PEERS") or ():
                peer = _peer_status(peer_nla)
                if peers and peers[-1].public_key == peer.public_key:
                    last = peers.pop()
                    peer = PeerStatus(
                        public_key=last.public_key,
                        endpoint=last.endpoint,
                        allowed_ips=last.allowed_ips + peer.allowed_ips,
                        persistent_keepalive_s=last.persistent_keepalive_s,
                        rx_bytes=last.rx_bytes,
                        tx_bytes=last.tx_bytes,
                        last_handshake=last.last_handshake,
                    )
                peers.append(peer)
        return DeviceStatus(
            name=ifname,
            public_key=None if public_key is None else _key(public_key),
            listen_port=first.get_attr("WGDEVICE_A_LISTEN_PORT") or 0,
            peers=tuple(peers),
            fwmark=first.get_attr("WGDEVICE_A_FWMARK") or 0,
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise WireGuardError(f"{ifname}: malformed WireGuard dump: {exc!r}", errno.EPROTO) from exc


def _peer_status(peer_nla: Any) -> PeerStatus:
    endpoint = peer_nla.get_attr("WGPEER_A_ENDPOINT")
    handshake = peer_nla.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
    allowed = peer_nla.get_attr("WGPEER_A_ALLOWEDIPS") or ()
    last_handshake: float | None = None
    if handshake is not None and (handshake["tv_sec"] or handshake["tv_nsec"]):
        last_handshake = handshake["tv_sec"] + handshake["tv_nsec"] / 1e9
    return PeerStatus(
        public_key=_key(peer_nla.get_attr("WGPEER_A_PUBLIC_KEY")),
        endpoint=None if endpoint is None else _endpoint(endpoint),
        allowed_ips=tuple(normalise_prefix(entry["addr"]) for entry in allowed),
        persistent_keepalive_s=peer_nla.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or 0,
        rx_bytes=peer_nla.get_attr("WGPEER_A_RX_BYTES") or 0,
        tx_bytes=peer_nla.get_attr("WGPEER_A_TX_BYTES") or 0,
        last_handshake=last_handshake,
    )


def _endpoint(endpoint: Any) -> tuple[str, int]:
    host = str(endpoint["addr"])
    scope_id = endpoint.get("scope_id") or 0  # only in IPv6 endpoints
    if scope_id:
        host = f"{host}%{scope_id}"
    return host, int(endpoint["port"])


def _key(value: Any) -> bytes:
    """pyroute2 decodes keys to base64; the model holds the raw 32 bytes."""
    key = b64decode(value, validate=True)
    if len(key) != 32:
        raise ValueError(f"WireGuard key of {len(key)} bytes")
    return key


# --- the backend -------------------------------------------------------------------------


def _pyroute2() -> Any:
    """pyroute2, imported on first use: it costs more than the rest of the CLI's start."""
    import pyroute2

    return pyroute2


@contextmanager
def _netlink_errors(what: str) -> Iterator[None]:
    """Turn pyroute2's NetlinkError (``code`` is the errno) into WireGuardError."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        yield
    except NetlinkError as exc:
        raise WireGuardError(f"{what}: {os.strerror(exc.code)}", exc.code) from exc


class KernelBackend:
    """WireGuard interfaces of the kernel module, in this process's network namespace."""

    name: str = "kernel"

    def __init__(
        self,
        iproute: IPRouteLike | None = None,
        wireguard: GenlWireGuardLike | None = None,
    ) -> None:
        self._iproute = iproute
        self._wireguard = wireguard

    def close(self) -> None:
        """Close its netlink sockets, handed-in ones included; they reopen on next use."""
        for handle in (self._iproute, self._wireguard):
            close = getattr(handle, "close", None)
            if close is not None:
                close()
        self._iproute = None
        self._wireguard = None

    # -- life cycle --

    def create(self, ifname: str) -> None:
        check_ifname(ifname)
        try:
            with _netlink_errors(f"create {ifname}"):
                self._ipr().link("add", ifname=ifname, kind=LINK_KIND)
        except WireGuardError as exc:
            if exc.errno == errno.EEXIST:
                raise WireGuardError(f"{ifname} already exists", errno.EEXIST) from exc
            if exc.errno == errno.EOPNOTSUPP:
                raise WireGuardError(
                    f"create {ifname}: this kernel has no WireGuard module", errno.EOPNOTSUPP
                ) from exc
            raise

    def delete(self, ifname: str) -> None:
        link = self._lookup(ifname)
        if link is None:
            return
        if _kind(link) != LINK_KIND:
            raise WireGuardError(f"{ifname} is not a WireGuard interface", errno.EINVAL)
        try:
            with _netlink_errors(f"delete {ifname}"):
                self._ipr().link("del", index=link["index"])
        except WireGuardError as exc:
            if exc.errno != errno.ENODEV:  # gone meanwhile: what we wanted
                raise

    def exists(self, ifname: str) -> bool:
        link = self._lookup(ifname)
        return link is not None and _kind(link) == LINK_KIND

    def list_interfaces(self, prefix: str) -> list[str]:
        with _netlink_errors("list links"):
            links = list(self._ipr().link("dump"))
        names = (link.get_attr("IFLA_IFNAME") for link in links if _kind(link) == LINK_KIND)
        return sorted(name for name in names if name and name.startswith(prefix))

    # -- configuration --

    def configure(self, ifname: str, update: DeviceUpdate) -> None:
        check_ifname(ifname)
        check_update(update)
        requests = [peer_request(peer) for peer in update.peers]  # ValueError before sending
        wireguard = self._wg()
        with _netlink_errors(f"configure {ifname}"):
            # Sent even when empty, so that a missing interface fails with ENODEV as in the
            # other backends.
            wireguard.set(
                ifname,
                listen_port=update.listen_port,
                fwmark=update.fwmark,
                private_key=None
                if update.private_key is None
                else b64encode(update.private_key).decode("ascii"),
            )
            if update.replace_peers:
                for peer in device_status_from_info(ifname, wireguard.info(ifname)).peers:
                    remove = {"public_key": b64encode(peer.public_key).decode(), "remove": True}
                    wireguard.set(ifname, peer=remove)
            for request in requests:
                wireguard.set(ifname, peer=request)

    def show(self, ifname: str) -> DeviceStatus:
        check_ifname(ifname)
        wireguard = self._wg()
        with _netlink_errors(f"show {ifname}"):
            messages = wireguard.info(ifname)
        return device_status_from_info(ifname, messages)

    # -- plumbing --

    def _ipr(self) -> IPRouteLike:
        if self._iproute is None:
            self._iproute = _pyroute2().IPRoute()
        return self._iproute

    def _wg(self) -> GenlWireGuardLike:
        if self._wireguard is None:
            try:
                with _netlink_errors("open the wireguard generic netlink family"):
                    self._wireguard = _pyroute2().WireGuard()
            except WireGuardError as exc:
                if exc.errno == errno.ENOENT:  # the family is unknown: no module
                    raise WireGuardError(
                        "this kernel has no WireGuard module (no 'wireguard' netlink family)",
                        errno.ENOENT,
                    ) from exc
                raise
        return self._wireguard

    def _lookup(self, ifname: str) -> Any | None:
        check_ifname(ifname)
        try:
            with _netlink_errors(f"look up {ifname}"):
                links = list(self._ipr().link("get", ifname=ifname))
        except WireGuardError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return links[0] if links else None


def _kind(link: Any) -> str | None:
    linkinfo = link.get_attr("IFLA_LINKINFO")
    return None if linkinfo is None else linkinfo.get_attr("IFLA_INFO_KIND")

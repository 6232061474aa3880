"""``meshd doctor``'s judgements (pure): what a new operator gets wrong, each check one
line saying what was found and, when it is wrong, what to do. The command
(meshd.cli.commands.doctor) gathers the facts: the config, this machine, and the running
daemon's status document (docs/control-api.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DAY_S = 86400
CERT_WARN_S = 7 * DAY_S  # a certificate this close to its end, not renewed yet: warn
DISK_FAIL_MB = 64  # free space under the state directory (the ledger grows there)
DISK_WARN_MB = 256


@dataclass(frozen=True)
class Finding:
    check: str
    verdict: str  # ok, warn, fail
    says: str  # what was found and, when not ok, what to do

    def line(self) -> str:
        return f"{self.verdict.upper():4}  {self.check:11} {self.says}"


def ok(check: str, says: str) -> Finding:
    return Finding(check, "ok", says)


def warn(check: str, says: str) -> Finding:
    return Finding(check, "warn", says)


def fail(check: str, says: str) -> Finding:
    return Finding(check, "fail", says)


def wireguard(backend: str, kernel_module: bool, wireguard_go: bool) -> Finding:
    """``backend``: the config's (auto, kernel, userspace)."""
    if kernel_module and backend != "userspace":
        return ok("wireguard", "the kernel module (kernel WireGuard)")
    if backend == "kernel":
        return fail(
            "wireguard",
            '[wireguard] backend = "kernel" but this kernel has no wireguard module: '
            'install a kernel with it, or set backend = "auto" to run wireguard-go',
        )
    if wireguard_go:
        return ok("wireguard", "wireguard-go (userspace; the kernel has no module)")
    return fail("wireguard", "no kernel module and no wireguard-go: apt install wireguard-go")


def nftables(version: str | None, error: str | None) -> Finding:
    if version is None:
        return fail("nftables", "nft not found: apt install nftables")
    if error is not None:
        return fail("nftables", f"nft cannot read the ruleset ({error}): run meshd as root")
    return ok("nftables", version)


def daemon(error: str | None) -> Finding:
    if error is not None:
        return fail(
            "daemon",
            f"meshd does not answer ({error}): systemctl status meshd; journalctl -u meshd",
        )
    return ok("daemon", "meshd answers on its control socket")


def clock(status: Mapping[str, Any]) -> Finding:
    c = status["clock"]
    if c["correction_s"]:
        off = -c["median_offset_s"]
        by = f"{off / DAY_S:+.1f} days" if abs(off) >= 2 * DAY_S else f"{off:+.1f} s"
        return fail(
            "clock",
            f"{by} from the median of {c['peers']} neighbours' "
            f"clocks (tolerance {c['tolerance_s']:g} s): certificates and receipts go by "
            "it; turn on NTP (timedatectl set-ntp true) or set the time",
        )
    if not c["peers"]:
        return warn("clock", "no neighbour has told its time yet: nothing to compare with")
    return ok("clock", f"within {c['tolerance_s']:g} s of {c['peers']} neighbours' clocks")


def neighbours(status: Mapping[str, Any], quic_port: int) -> list[Finding]:
    """One line per neighbour that is not up, saying which port to look at."""
    found = status["neighbours"]
    if not found:
        return [
            fail(
                "neighbours",
                "none: check [[bootstrap]] (from the invite) and the underlay (cable, radio)",
            )
        ]
    out = []
    for n in found:
        name = n.get("name") or n["node_id"][:8]
        control = n.get("control") or {}
        if n["state"] == "up":
            continue
        if control.get("session") != "up":
            why = f" (refused: {control['refusal']})" if control.get("refusal") else ""
            where = f" at {control['address']}" if control.get("address") else ""
            out.append(
                fail(
                    "neighbours",
                    f"no session with {name}{where}{why}: UDP {quic_port} must be open on "
                    "both sides (a home router's firewall or NAT in between?)",
                )
            )
        else:
            out.append(
                fail(
                    "neighbours",
                    f"{name}'s session is up but its WireGuard link carries nothing: is "
                    f"{n.get('endpoint') or 'its endpoint'} reachable (UDP), and our port "
                    f"{n.get('listen_port') or '?'} from it?",
                )
            )
    up = sum(n["state"] == "up" for n in found)
    if not out:
        return [ok("neighbours", f"{up} up, every session and link working")]
    return out


def uplink(status: Mapping[str, Any], health_target: str) -> Finding:
    gateway = status.get("gateway") or {}
    up = gateway.get("uplink")
    if up is None:
        return ok("uplink", "none of its own ([uplink] interface unset): leaves by the mesh")
    if up["state"] == "up":
        return ok("uplink", f"{up['interface']} reaches {health_target}")
    if up["state"] == "unknown":
        return warn("uplink", f"{up['interface']}: not checked yet ({up.get('reason') or ''})")
    return fail(
        "uplink",
        f"{up['interface']} is down ({up.get('reason')}): check its cable and modem, and that "
        f"[uplink] health_target ({health_target}) answers through it",
    )


def certificate(status: Mapping[str, Any], now: float) -> Finding:
    m = status.get("membership")
    if m is None:
        return warn("certificate", "the daemon has not checked its membership yet")
    left = m["expires_at"] - now
    renewal = m.get("renewal")
    if left <= 0:
        return fail(
            "certificate",
            f"expired {-left / DAY_S:.1f} days ago: ask an admin for a new invite "
            "(meshd leave, then join again) or for a renewal",
        )
    if left < CERT_WARN_S:
        return warn(
            "certificate",
            f"expires in {left / DAY_S:.1f} days, renewal {renewal}: an admin or delegate "
            "must be reachable over the mesh to renew it",
        )
    return ok("certificate", f"valid {left / DAY_S:.0f} more days (renewal {renewal})")


def disk(free_mb: float, total_mb: float, ledger_mb: float, state_dir: str) -> Finding:
    says = f"{free_mb:.0f} MiB free under {state_dir} (ledger {ledger_mb:.1f} MiB)"
    if free_mb < DISK_FAIL_MB:
        return fail("disk", f"only {says}: free space, or the ledger cannot grow")
    if free_mb < DISK_WARN_MB or free_mb < 0.05 * total_mb:
        return warn("disk", f"{says}: little room left")
    return ok("disk", says)

"""meshd run --config FILE"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the node's TOML config file")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")


def main(args: argparse.Namespace) -> int:
    from meshd import config, log
    from meshd.adapters import identity, state_dir, trust
    from meshd.adapters.net.netlink import Netlink, NetlinkError
    from meshd.adapters.net.sysctl import SysctlMissing
    from meshd.adapters.wg.model import WireGuardError
    from meshd.adapters.wg.select import select_backend
    from meshd.daemon.joining import EXIT_REFUSED, JoinError
    from meshd.daemon.node import Node

    log.setup(args.log_level.upper())
    try:
        cfg = config.load(args.config)
        ident = identity.load_or_generate(cfg.node.state_dir)
        upgraded = state_dir.upgrade(cfg.node.state_dir, time.time())
        if upgraded is not None:
            log.event(
                "state.upgraded",
                schema=upgraded.schema,
                to=upgraded.to,
                stores=",".join(f"{n}:{v}" for n, v in upgraded.stores.items()) or "-",
                copy=str(upgraded.copy),
            )
        backend = select_backend(cfg.wireguard.backend)
        node = Node(cfg, ident, backend, Netlink())
        asyncio.run(node.run())
    except JoinError as exc:
        # Refused: the invite will never do (reused, expired, altered, revoked), and the
        # service manager must not start us again for it (RestartPreventExitStatus).
        print(f"meshd: cannot join the mesh: {exc}", file=sys.stderr)
        return EXIT_REFUSED if exc.final else 1
    except (
        config.ConfigError,
        identity.KeyFileError,
        state_dir.StateError,
        trust.TrustError,
        WireGuardError,
        NetlinkError,
        SysctlMissing,
        RuntimeError,
        PermissionError,
    ) as exc:
        print(f"meshd: {exc}", file=sys.stderr)
        return 1
    return 0

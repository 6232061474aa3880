"""What "converged" means, judged from the nodes' ``status`` answers (pure).

Expected of every running node N (DESIGN.md, netns-testbed ``wait-converged``):
- every neighbour that runs and whose link is not cut (nor at 100 % loss) is listed in N's
  ``neighbours`` with ``state == "up"``;
- when N's status has ``routes``: an installed route to the mesh addresses (IPv4 /32, IPv6
  /128) of every other node reachable from N over running nodes and working links; or, as
  asked, of its working neighbours only, or no route check at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from nstestbed.plan import Plan, pair_key
from nstestbed.rules import Impairments


def working_pairs(plan: Plan, running: set[str], imp: Impairments) -> set[str]:
    """Pair keys of neighbours that can talk: both run, not cut, not at 100 % loss."""
    out = set()
    for node in plan.nodes:
        for adj in node.adjacencies:
            key = pair_key(node.name, adj.peer)
            if (
                node.name in running
                and adj.peer in running
                and key not in imp.cut
                and imp.loss.get(key, 0) < 100
            ):
                out.add(key)
    return out


def reachable(plan: Plan, start: str, pairs: set[str]) -> set[str]:
    """Nodes reachable from ``start`` over working pairs (``start`` excluded)."""
    seen = {start}
    todo = [start]
    while todo:
        here = plan.node(todo.pop())
        for adj in here.adjacencies:
            if adj.peer not in seen and pair_key(here.name, adj.peer) in pairs:
                seen.add(adj.peer)
                todo.append(adj.peer)
    return seen - {start}


def missing(
    plan: Plan,
    imp: Impairments,
    statuses: Mapping[str, dict[str, Any] | str],
    node_ids: Mapping[str, str],
    mesh_ipv6: Mapping[str, str],
    routes: str = "auto",
    mesh_ipv4: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """What each running node still lacks; empty when converged.

    ``statuses`` maps every running node to its status result, or to an error text when it
    did not answer. ``mesh_ipv6`` maps node names to their mesh IPv6 addresses, and
    ``mesh_ipv4`` to their IPv4 ones where not the plan's (invited nodes). ``routes``:
    "auto" or "all" (every reachable node), "neighbours" (direct neighbours only) or
    "none"."""
    running = set(statuses)
    pairs = working_pairs(plan, running, imp)
    out: dict[str, list[str]] = {}
    for name, status in statuses.items():
        problems: list[str] = []
        if isinstance(status, str):
            out[name] = [f"no status: {status}"]
            continue
        node = plan.node(name)
        listed = status.get("neighbours") or []
        for adj in node.adjacencies:
            if pair_key(name, adj.peer) not in pairs:
                continue
            entry = next(
                (
                    n
                    for n in listed
                    if isinstance(n, dict)
                    and (n.get("node_id") == node_ids.get(adj.peer) or n.get("name") == adj.peer)
                ),
                None,
            )
            if entry is None:
                problems.append(f"neighbour {adj.peer}: not listed")
            elif entry.get("state") != "up":
                problems.append(f"neighbour {adj.peer}: {entry.get('state')}")
        if routes != "none" and "routes" in status:
            have = set()
            for route in status.get("routes") or []:
                try:
                    have.add(ipaddress.ip_network(str(route.get("prefix")), strict=False))
                except (ValueError, AttributeError):
                    continue
            if routes == "neighbours":
                targets = {a.peer for a in node.adjacencies if pair_key(name, a.peer) in pairs}
            else:
                targets = reachable(plan, name, pairs)
            for other in sorted(targets):
                ipv4 = (mesh_ipv4 or {}).get(other) or plan.node(other).mesh_ipv4
                wanted = [ipaddress.ip_network(f"{ipv4}/32")]
                if other in mesh_ipv6:
                    wanted.append(ipaddress.ip_network(f"{mesh_ipv6[other]}/128"))
                absent = [str(p) for p in wanted if p not in have]
                if absent:
                    problems.append(f"no route to {other} ({', '.join(absent)})")
        if problems:
            out[name] = problems
    return out

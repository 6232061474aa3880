"""meshd receipts export [--since WHEN] [--format jsonl|csv] | verify FILE [--admin-key KEY] |
summary FILE... : write this node's receipts, check receipts exports offline, on any
machine, and add them up for the treasurer (format: docs/receipts.md).

export reads the node's own files (its config: --config, else $MESHD_CONFIG, else
/etc/meshd/meshd.toml), so it works with the daemon stopped.

verify prints one line per refused record (``FILE:LINE: reason: message``) and exits 0 only
when every record verifies. summary prints bytes per provider/consumer pair across every
file, counting each receipt once; refused records are left out, listed, and make the exit
status 1. Without --admin-key the signatures, mesh and order are checked, membership not.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import BinaryIO

from meshd.adapters import signatures
from meshd.cli.commands import add_config_argument
from meshd.core.receipts import ExportReport, Summary, summarize, verify_export


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = sub.add_parser(
        "export",
        help="this node's receipts, with the certificates that verify them",
        description="Write every receipt this node stored (signed for it as provider, and "
        "by it as consumer) to standard output: JSON Lines with the mesh definition and the "
        "signers' certificates first (what `meshd receipts verify` reads), or CSV.",
    )
    add_config_argument(export)
    export.add_argument(
        "--since",
        metavar="WHEN",
        help="only receipts stored since: YYYY-MM-DD (UTC), an ISO 8601 time, or Unix seconds",
    )
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    verify = sub.add_parser(
        "verify",
        help="check every record of an export; exit 0 only when all verify",
        description="Check every record of a receipts export (JSON Lines): signatures over "
        "the canonical bytes, mesh, order and totals per chain and, with --admin-key, that "
        "each signer was a member. Prints FILE:LINE: reason: message per refused record.",
    )
    verify.add_argument("file", metavar="FILE", help="a receipts export, - for stdin")
    _admin_key_option(verify)
    summary = sub.add_parser(
        "summary",
        help="bytes relayed per provider/consumer pair across exports",
        description="The treasurer's table: the bytes each provider relayed for and to each "
        "consumer, from the latest receipt of every epoch, summed over epochs, each receipt "
        "counted once however many exports carry it, with the pair's disputes and the bytes "
        "claimed beyond what was signed.",
    )
    summary.add_argument("files", nargs="+", metavar="FILE", help="receipts exports (- stdin)")
    _admin_key_option(summary)
    summary.add_argument("--json", action="store_true", help="print one JSON object")


def _admin_key_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--admin-key",
        action="append",
        default=[],
        metavar="KEY",
        help="node id of a mesh admin key, as in the config's mesh.admin_keys (repeatable); "
        "the export's mesh definition must be signed by one, and membership is checked",
    )


def _check_admin_keys(keys: list[str]) -> str | None:
    from meshd.adapters.identity import public_from_node_id

    for key in keys:
        try:
            public_from_node_id(key)
        except ValueError as exc:
            return f"--admin-key {key!r}: expected a node id: {exc}"
    return None


@contextmanager
def _opened(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
    else:
        with open(name, "rb") as f:
            yield f


def parse_since(text: str | None) -> float:
    """``--since`` as Unix seconds; ValueError naming the forms it takes."""
    if not text:
        return 0.0
    with contextlib.suppress(ValueError):
        return float(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected YYYY-MM-DD, an ISO 8601 time or Unix seconds"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _export(args: argparse.Namespace) -> int:
    from meshd import config as configuration
    from meshd.adapters import ledger_export

    try:
        since = parse_since(args.since)
        cfg = configuration.load(configuration.config_path(args.config))
        if args.format == "csv":
            lines = ledger_export.csv_rows(cfg.node.state_dir, since)
        else:
            lines = ledger_export.jsonl(cfg.node.state_dir, cfg.mesh.admin_keys, since)
        for line in lines:
            sys.stdout.write(line + "\n")
    except (ValueError, configuration.ConfigError, ledger_export.ExportError) as exc:
        print(f"meshd receipts export: {exc}", file=sys.stderr)
        return 2
    return 0


def main(args: argparse.Namespace) -> int:
    if args.action == "export":
        return _export(args)
    problem = _check_admin_keys(args.admin_key)
    if problem:
        print(f"meshd receipts: {problem}", file=sys.stderr)
        return 2
    try:
        if args.action == "verify":
            return _verify(args.file, args.admin_key)
        return _summary(args.files, args.admin_key, args.json)
    except OSError as exc:
        print(f"meshd receipts: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 2


def _membership_note(checked: bool, admin_keys: list[str]) -> str:
    if checked:
        return "membership checked"
    if admin_keys:
        return "membership NOT checked: the mesh definition is missing or untrusted"
    return "membership not checked (no --admin-key)"


def _verify(name: str, admin_keys: list[str]) -> int:
    with _opened(name) as f:
        report: ExportReport = verify_export(f, admin_keys, signatures=signatures.on_threads())
    for rejection in report.rejections:
        print(rejection.describe(name))
    print(
        f"{name}: {len(report.receipts)} receipts verified, {report.duplicates} duplicates "
        f"ignored, {len(report.rejections)} records refused; "
        f"{_membership_note(report.membership_checked, admin_keys)}",
        file=sys.stderr,
    )
    return 0 if report.ok else 1


def _summary(names: list[str], admin_keys: list[str], as_json: bool) -> int:
    contents = []
    for name in names:  # whole files: summarize reads them after all are open
        with _opened(name) as f:
            contents.append((name, f.read().split(b"\n")))
    summary = summarize(contents, admin_keys)
    for source, rejection in summary.rejections:
        print(rejection.describe(source), file=sys.stderr)
    if as_json:
        print(json.dumps(_summary_json(summary), ensure_ascii=False))
    else:
        for line in _table(summary):
            print(line)
        print(_membership_note(summary.membership_checked, admin_keys), file=sys.stderr)
    return 0 if summary.ok else 1


def _summary_json(summary: Summary) -> dict[str, object]:
    return {
        "mesh_id": summary.mesh_id.hex() if summary.mesh_id is not None else None,
        "membership_checked": summary.membership_checked,
        "pairs": [
            {
                "provider": row.provider,
                "provider_name": summary.names.get(row.provider),
                "consumer": row.consumer,
                "consumer_name": summary.names.get(row.consumer),
                "epochs": row.epochs,
                "relayed_for_bytes": row.relayed_for_bytes,
                "relayed_to_bytes": row.relayed_to_bytes,
                "disputes": row.disputes,
                "disputed_bytes": row.disputed_bytes,
            }
            for row in summary.rows
        ],
        "refused": [
            {"file": source, "line": r.line, "reason": str(r.reason), "message": r.message}
            for source, r in summary.rejections
        ],
    }


def _who(node_id: str, names: Mapping[str, str]) -> str:
    # Names are for people and need not be unique: the id's start tells two apart.
    name = names.get(node_id)
    return f"{name} ({node_id[:8]})" if name else node_id


def _table(summary: Summary) -> list[str]:
    header = (
        "provider",
        "consumer",
        "epochs",
        "relayed_for_bytes",
        "relayed_to_bytes",
        "disputes",
        "disputed_bytes",
    )
    rows = [
        (
            _who(row.provider, summary.names),
            _who(row.consumer, summary.names),
            str(row.epochs),
            str(row.relayed_for_bytes),
            str(row.relayed_to_bytes),
            str(row.disputes),
            str(row.disputed_bytes),
        )
        for row in summary.rows
    ]
    widths = [max(len(cells[i]) for cells in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()
        for cells in (header, *rows)
    ]

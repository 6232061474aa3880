"""The community map in the daemon: what ``[map]`` lets this node show, the map records kept
across restarts (``map.jsonl`` in the state directory) and the two files a web server
serves (``meshviewer.json``, ``nodelist.json``: meshd.core.map_export), written to
``[map] export_dir`` on a timer and by ``meshd map export DIR`` (the ``map`` call)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshd.adapters import safe_files
from meshd.config import Config
from meshd.core import map_export
from meshd.core.control.community_map import Publishing
from meshd.core.proto.map_record import Location

if TYPE_CHECKING:
    from meshd.core.control.plane import ControlPlane

MAP_FILE = "map.jsonl"  # every member's map record this node keeps, and when first seen
FILES = ("meshviewer.json", "nodelist.json")
SAVE_EVERY_S = 60.0


def publishing(cfg: Config) -> Publishing:
    m = cfg.map
    return Publishing(
        publish=m.publish,
        name=m.name,
        contact=m.contact,
        location=Location.parse(m.location) if m.location else None,
        refresh_s=m.refresh_s,
    )


def documents(core: ControlPlane) -> dict[str, Any]:
    """The ``map`` call's answer: both files' contents, by file name."""
    nodes = core.map_nodes()
    wall = core.clock.now()
    domain = core.own.trust.definition.name
    return {
        "meshviewer.json": map_export.meshviewer(nodes, domain, wall),
        "nodelist.json": map_export.nodelist(nodes, wall),
    }


def files(directory: Path, docs: dict[str, Any]) -> list[tuple[Path, bytes]]:
    """Both files' paths in ``directory`` and their bytes."""
    return [
        (directory / name, (json.dumps(docs[name], indent=1, ensure_ascii=False) + "\n").encode())
        for name in FILES
    ]


def write(writes: list[tuple[Path, bytes]]) -> None:
    """Each file replaced whole and world-readable (for the web server), its directory
    made if missing. Blocking: the daemon runs it on its kernel thread."""
    for path, data in writes:
        path.parent.mkdir(parents=True, exist_ok=True)
        safe_files.write_atomically(path, data, 0o644)


class MapKeeper:
    """When the records are saved and export_dir's files written: ``due`` (on the event
    loop, which owns the control plane) says what to write; the writing blocks."""

    def __init__(self, cfg: Config, state_dir: Path) -> None:
        self.export_dir = Path(cfg.map.export_dir) if cfg.map.export_dir else None
        self.interval = cfg.map.export_interval_s
        self.state_file = state_dir / MAP_FILE
        self.next_export = self.next_save = 0.0
        self.saved = b""
        self.exported_at: float | None = None  # wall clock of the last export_dir write

    def load(self, core: ControlPlane) -> int:
        try:
            data = self.state_file.read_bytes()
        except FileNotFoundError:
            return 0
        self.saved = data
        return core.community_map.load(data)

    def due(self, core: ControlPlane, now: float, final: bool = False) -> list[tuple[Path, bytes]]:
        writes = []
        if final or now >= self.next_save:
            self.next_save = now + SAVE_EVERY_S
            data = core.community_map.encode()
            if data != self.saved:
                writes.append((self.state_file, data))
                self.saved = data
        if self.export_dir is not None and now >= self.next_export and not final:
            self.next_export = now + self.interval
            writes += files(self.export_dir, documents(core))
            self.exported_at = time.time()
        return writes

    def status(self, core: ControlPlane) -> dict[str, Any]:
        return {
            **core.community_map.status(),
            "export_dir": str(self.export_dir) if self.export_dir else None,
            "exported_at": self.exported_at,
        }

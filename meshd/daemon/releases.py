"""Releases over the mesh, the node's side (issue 20): the files of the release this node
holds and of the one it fetches, what neighbours ask of them, and what it publishes.

The rules (what is taken from whom, one part at a time) are meshd.core.releases'; this
keeps their files in ``releases/`` of the state directory:

- ``<serial>.manifest`` and ``<serial>.artifact``: the release held, served to neighbours;
- ``<serial>.part``: the artifact of a newer one, as far as it came (each part written
  where it goes, then the whole checked against the manifest's size and SHA-256 before it
  is renamed ``.artifact``), or, from ``meshd release publish``, the artifact handed in;
- ``<serial>.fetching``: that newer one's manifest.

At start the newest release whose artifact still matches its manifest is held again, and a
fetch under way goes on from where its part had come once a neighbour offers it again
(meshd.core.releases.Releases.resume); any other file there goes. Every
refusal is counted in the sending neighbour's refusals (``meshd status``), and in
``status()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from meshd import __version__
from meshd.adapters import safe_files
from meshd.adapters.installs import InstallError, Installs
from meshd.core.control import effects as fx
from meshd.core.membership import MeshTrust
from meshd.core.proto import session as messages
from meshd.core.proto.release import ReleaseError, ReleaseManifest
from meshd.core.releases import Releases
from meshd.core.updates import Record
from meshd.daemon.control import ControlService
from meshd.daemon.tasks import Tasks
from meshd.log import event

RELEASES_DIR = "releases"
_READ = 1024 * 1024  # octets a read while checking an artifact


class PublishError(Exception):
    """A release handed in (``meshd release publish``) that this node will not serve."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def artifact_matches(path: Path, manifest: ReleaseManifest) -> bool:
    """Whether the file at ``path`` is exactly the artifact ``manifest`` names."""
    digest = hashlib.sha256()
    try:
        fd = safe_files.open_regular(path)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        if os.fstat(f.fileno()).st_size != manifest.artifact_size:
            return False
        while chunk := f.read(_READ):
            digest.update(chunk)
    return digest.digest() == manifest.artifact_sha256


class ReleaseService:
    def __init__(
        self, control: ControlService, state_dir: Path, stage: str, installs: Installs | None = None
    ) -> None:
        self.control, self.stage = control, stage
        self.installs = installs or Installs()
        self.dir = state_dir / RELEASES_DIR
        definition = control.core.own.trust.definition

        def trust() -> MeshTrust:  # the one in force: admins rotate, thresholds change
            return control.core.own.trust

        self.core = Releases(
            definition.mesh_id, lambda: trust().admins, lambda: trust().definition.threshold
        )
        self.refused: Counter[str] = Counter()
        self.tasks = Tasks("releases")
        self._checking = False  # a fetched artifact's SHA-256 is being computed
        self._record: tuple[tuple[int, int], Record] | None = None  # update.json, by mtime, size

    def _path(self, serial: int, suffix: str) -> Path:
        return self.dir / f"{serial}.{suffix}"

    def load(self) -> None:
        """Hold the newest release whose artifact matches its manifest again; remove the rest."""
        self.dir.mkdir(mode=0o700, exist_ok=True)
        for path in sorted(self.dir.glob("*.manifest"), key=serial_of, reverse=True):
            try:
                data = safe_files.read_bytes(path)
                manifest = self.core.check(data)
            except (OSError, ValueError):
                continue
            if artifact_matches(self._path(manifest.serial, "artifact"), manifest):
                self._hold(manifest, data)
                break
        self._resume()
        self._prune()

    def _resume(self) -> None:
        """The newest fetch under way before the restart, if it is still wanted."""
        for path in sorted(self.dir.glob("*.fetching"), key=serial_of, reverse=True):
            try:
                data = safe_files.read_bytes(path)
                on_disk = self._path(serial_of(path), "part").stat().st_size
            except OSError:
                continue
            manifest = self.core.resume(data, on_disk)
            if manifest is not None:
                fetching = self.core.fetching
                assert fetching is not None
                event("release.resumed", serial=manifest.serial, received=fetching.received,
                      size=manifest.artifact_size)  # fmt: skip
            return

    def _hold(self, manifest: ReleaseManifest, encoded: bytes) -> None:
        self.core.hold(manifest, encoded)
        self.control.offer_release(self.core.held_encoded)

    def _prune(self) -> None:
        """Every file but the held release's and the fetch's under way."""
        keep = set()
        if (held := self.core.held) is not None:
            keep |= {f"{held.serial}.manifest", f"{held.serial}.artifact"}
        if (fetching := self.core.fetching) is not None:
            keep |= {f"{fetching.manifest.serial}.part", f"{fetching.manifest.serial}.fetching"}
        for path in self.dir.iterdir():
            if path.name not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()

    # ---- from neighbours --------------------------------------------------------------

    def on_message(self, node_id: str, msg: fx.ReleaseMessage) -> None:
        """A verified neighbour's RELEASE, RELEASE_FETCH or RELEASE_PART (the control
        plane's ``Release`` effect)."""
        if isinstance(msg, messages.Release):
            reason, started = self.core.heard(node_id, msg.manifest)
            if started:
                fetching = self.core.fetching
                assert fetching is not None
                self._start_fetch(fetching.manifest, fetching.encoded, node_id)
        elif isinstance(msg, messages.ReleaseFetch):
            served = self.core.serve(msg)
            reason = served if isinstance(served, str) else None
            if not isinstance(served, str):
                self._send_part(node_id, msg.serial, *served)
        else:
            reason = self.core.part(node_id, msg)
            if reason is None:
                self._write_part(msg)
        if reason is not None:
            self._refuse(node_id, reason)

    def _refuse(self, node_id: str, reason: str) -> None:
        self.refused[reason] += 1
        self.control.count_refusal(node_id, reason, "release.refused",
                                   peer=node_id[:8] or "several")  # fmt: skip

    def _start_fetch(self, manifest: ReleaseManifest, encoded: bytes, node_id: str) -> None:
        self._prune()  # an older fetch's part goes
        part = self._path(manifest.serial, "part")
        try:
            part.unlink(missing_ok=True)
            safe_files.create(part, 0o600)
            safe_files.write_atomically(self._path(manifest.serial, "fetching"),
                                        encoded, 0o600)  # fmt: skip
        except OSError as exc:  # each part's write fails too, and the check at the end
            event("release.file_failed", logging.WARNING, serial=manifest.serial, error=str(exc))
        event("release.heard", serial=manifest.serial, version=manifest.meshd_version,
              size=manifest.artifact_size, peer=node_id[:8])  # fmt: skip

    def _send_part(self, node_id: str, serial: int, offset: int, length: int) -> None:
        try:
            fd = safe_files.open_regular(self._path(serial, "artifact"))
            try:
                data = os.pread(fd, length, offset)
            finally:
                os.close(fd)
        except OSError as exc:  # the file went: nothing served, the asker asks another
            event("release.file_failed", logging.WARNING, serial=serial, error=str(exc))
            return
        self.control.send_to_member(node_id, messages.ReleasePart(serial, offset, data))

    def _write_part(self, msg: messages.ReleasePart) -> None:
        try:
            fd = safe_files.open_regular(self._path(msg.serial, "part"), os.O_WRONLY)
            try:
                os.pwrite(fd, msg.data, msg.offset)
            finally:
                os.close(fd)
        except OSError as exc:  # a full card, say: the check at the end fails and it restarts
            event("release.file_failed", logging.WARNING, serial=msg.serial, error=str(exc))
        fetching = self.core.fetching
        if fetching is not None and fetching.complete and not self._checking:
            self._checking = True
            self.tasks.spawn(self._check(fetching.manifest))

    async def _check(self, manifest: ReleaseManifest) -> None:
        """The whole artifact is in: checked off the event loop, then held and offered."""
        part = self._path(manifest.serial, "part")
        try:
            matches = await asyncio.to_thread(artifact_matches, part, manifest)
        finally:
            self._checking = False
        fetching = self.core.fetching
        if fetching is None or fetching.manifest.serial != manifest.serial:
            return  # a newer one came meanwhile
        if not matches:
            # Counted against the neighbour that served it, when one served it all.
            (culprit,) = fetching.served_by if len(fetching.served_by) == 1 else ("",)
            self._refuse(culprit, "release_bad_artifact")
            self.core.fetched(False)
            with contextlib.suppress(OSError):
                os.truncate(part, 0)
            return
        self._adopt(manifest, fetching.encoded, part)
        event("release.fetched", serial=manifest.serial, version=manifest.meshd_version,
              size=manifest.artifact_size)  # fmt: skip

    def _adopt(self, manifest: ReleaseManifest, encoded: bytes, artifact: Path) -> None:
        """``artifact`` (checked) becomes the release held and served; ``encoded``: its
        manifest with the signatures it came with."""
        safe_files.write_atomically(self._path(manifest.serial, "manifest"), encoded, 0o644)
        os.replace(artifact, self._path(manifest.serial, "artifact"))
        self._hold(manifest, encoded)
        self._prune()

    # ---- the node's own ------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Ask the next part of the release being fetched, if one is due."""
        if self.core.fetching is None:
            return
        asked = self.core.ask(now, self.control.core.release_peers())
        if asked is not None:
            self.control.send_to_member(*asked)

    def publish(self, manifest_bytes: bytes) -> dict[str, Any]:
        """A release handed in on this node (``meshd release publish``, which put its
        artifact at ``<serial>.part``): held and offered to the neighbours when this mesh's
        admins signed it, it is newer than the one held and the artifact is the one named."""
        try:
            manifest = self.core.check(manifest_bytes)
        except ReleaseError as exc:
            raise PublishError(exc.code, f"the manifest is refused: {exc}") from None
        held = self.core.held
        if held is not None and manifest.serial <= held.serial:
            raise PublishError("release_not_newer", f"release {held.serial} is held here already")
        part = self._path(manifest.serial, "part")
        if not artifact_matches(part, manifest):
            raise PublishError(
                "release_bad_artifact", f"{part} is not the artifact the manifest names"
            )
        self._adopt(manifest, manifest_bytes, part)
        event("release.published", serial=manifest.serial, version=manifest.meshd_version)
        return self.status()

    def status(self) -> dict[str, Any]:
        held, fetching = self.core.held, self.core.fetching

        def release(manifest: ReleaseManifest) -> dict[str, Any]:
            start = manifest.stage_start(self.stage)
            return {
                "serial": manifest.serial,
                "meshd_version": manifest.meshd_version,
                "artifact": manifest.artifact_name,
                "size": manifest.artifact_size,
                "sha256": manifest.artifact_sha256.hex(),
                "issuer": manifest.issuer,
                "issued_at": manifest.issued_at,
                "takes_from": start,  # None: manual
            }

        return {
            "running": __version__,
            "stage": self.stage,
            "held": release(held) if held is not None else None,
            "fetching": None
            if fetching is None
            else {
                **release(fetching.manifest),
                "received": fetching.received,
                "holders": list(fetching.sources),
            },
            "refused": dict(self.refused),
            # What `meshd update` did on this node (meshd.adapters.installs), if anything.
            "installs": self._installs(),
        }

    def _installs(self) -> dict[str, Any] | None:
        """The update record, parsed again only when its file changed (every status asks)."""
        try:
            stat = self.installs.record_path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            if self._record is None or self._record[0] != key:
                self._record = (key, self.installs.load())
            record = self._record[1]
        except FileNotFoundError:
            return None
        except (InstallError, OSError) as exc:
            return {"unreadable": str(exc)}
        return {**record.to_json(), "concerns": record.concerns(time.time())}

    async def stop(self) -> None:
        await self.tasks.cancel()


def serial_of(path: Path) -> int:
    """The release serial a file of ``releases/`` is named by (-1: none)."""
    try:
        return int(path.name.split(".")[0])
    except ValueError:
        return -1

"""Doing each provisioning action once, or with ``--dry-run`` only saying it (stdlib only).

Every action compares what is there with what should be and acts only on a difference,
so that a second run changes nothing: a file is written only when its bytes differ (then
atomically: a temporary file beside it, renamed over it), its mode or owner fixed only
when they differ. Each action prints one line: ``+`` done, ``=`` already so, ``would``
in a dry run. Paths are the target system's (``/etc/meshd``), placed under the root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import TextIO

from provisioning.host import Owner


class Refused(Exception):
    """Provisioning cannot go on; the message says why and what to do."""


class StepError(Exception):
    """An action failed: a command's exit status, a file that could not be written."""


class Runner:
    def __init__(self, root: Path, *, dry_run: bool, owner: Owner | None, out: TextIO) -> None:
        self.root = root
        self.dry_run = dry_run
        self.owner = owner  # of the files meshd itself writes or reads secrets from
        self.out = out
        self.changes = 0

    def path(self, target: str) -> Path:
        return self.root / target.lstrip("/")

    def changed(self, what: str) -> None:
        self.changes += 1
        print(f"{'would' if self.dry_run else '+'} {what}", file=self.out, flush=True)

    def unchanged(self, what: str) -> None:
        print(f"= {what}", file=self.out, flush=True)

    def _ids(self, owned: bool) -> tuple[int, int] | None:
        return (self.owner.uid, self.owner.gid) if owned and self.owner else None

    def _owner_text(self, owned: bool) -> str:
        return f", {self.owner.user}'s" if owned and self.owner else ""

    def _metadata_fixes(self, path: Path, mode: int, owned: bool) -> list[str]:
        st = path.stat()
        fixes = []
        if stat.S_IMODE(st.st_mode) != mode:
            fixes.append(f"mode {stat.S_IMODE(st.st_mode):04o} -> {mode:04o}")
        ids = self._ids(owned)
        if ids is not None and (st.st_uid, st.st_gid) != ids:
            fixes.append(f"owner {st.st_uid}:{st.st_gid} -> {ids[0]}:{ids[1]}")
        return fixes

    def _apply_metadata(self, path: Path, mode: int, owned: bool) -> None:
        os.chmod(path, mode)
        ids = self._ids(owned)
        if ids is not None:
            os.chown(path, *ids)

    def directory(self, target: str, mode: int, *, owned: bool = False) -> None:
        path = self.path(target)
        if not path.is_dir():
            self.changed(f"create directory {target} ({mode:04o}{self._owner_text(owned)})")
            if not self.dry_run:
                path.mkdir(parents=True, mode=mode)
                self._apply_metadata(path, mode, owned)
            return
        fixes = self._metadata_fixes(path, mode, owned)
        if fixes:
            self.changed(f"directory {target}: {', '.join(fixes)}")
            if not self.dry_run:
                self._apply_metadata(path, mode, owned)
        else:
            self.unchanged(f"directory {target}")

    def file(self, target: str, content: bytes, mode: int, *, owned: bool = False) -> bool:
        """Make ``target`` hold ``content``; True when anything changed (or would)."""
        path = self.path(target)
        if path.is_file() and path.read_bytes() == content:
            fixes = self._metadata_fixes(path, mode, owned)
            if not fixes:
                self.unchanged(f"file {target}")
                return False
            self.changed(f"file {target}: {', '.join(fixes)}")
            if not self.dry_run:
                self._apply_metadata(path, mode, owned)
            return True
        verb = "replace" if path.exists() else "write"
        self.changed(f"{verb} {target} ({mode:04o}{self._owner_text(owned)})")
        if not self.dry_run:
            self._write(path, content, mode, owned)
        return True

    def _write(self, path: Path, content: bytes, mode: int, owned: bool) -> None:
        tmp = path.with_name(f".{path.name}.provision")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            self._apply_metadata(tmp, mode, owned)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StepError(f"{path}: {exc.strerror or exc}") from None

    def remove(self, target: str) -> bool:
        """Remove ``target`` (a file, or a directory and everything in it) when it is
        there; True when anything changed (or would)."""
        path = self.path(target)
        if not path.exists() and not path.is_symlink():
            self.unchanged(f"{target} absent")
            return False
        tree = path.is_dir() and not path.is_symlink()
        self.changed(f"remove {target}{' and everything in it' if tree else ''}")
        if not self.dry_run:
            try:
                if tree:
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as exc:
                raise StepError(f"{path}: {exc.strerror or exc}") from None
        return True

    def own(self, target: str, mode: int) -> None:
        """A file made by someone else (the keys): give it our mode and owner."""
        path = self.path(target)
        fixes = self._metadata_fixes(path, mode, owned=True)
        if fixes:
            self.changed(f"file {target}: {', '.join(fixes)}")
            if not self.dry_run:
                self._apply_metadata(path, mode, owned=True)

    def run(self, argv: list[str], what: str) -> None:
        """A command that changes the system (the caller knows it is needed)."""
        self.changed(what)
        if self.dry_run:
            return
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError as exc:
            raise StepError(f"{argv[0]}: {exc.strerror}") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise StepError(f"{' '.join(argv)}: exit {done.returncode}: {' | '.join(detail)}")

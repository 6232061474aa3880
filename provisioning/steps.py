"""Doing each provisioning action once, or with ``--dry-run`` only saying it (stdlib only).

Every action compares what is there with what should be and acts only on a difference,
so that a second run changes nothing: a file is written only when its bytes differ (then
atomically: a temporary file beside it, renamed over it), its mode or owner fixed only
when they differ. Nothing follows a link: the state directory is the ``meshd`` user's,
who could plant one for root to follow (meshd.adapters.safe_files does every write, mode
and owner; a link where a file or directory should be is refused). Each action prints
one line: ``+`` done, ``=`` already so, ``would`` in a dry run. Paths are the target
system's (``/etc/meshd``), placed under the root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import TextIO

from meshd.adapters import safe_files
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

    def _lstat(self, path: Path, *, directory: bool = False) -> os.stat_result | None:
        """What is at ``path`` (None: nothing), refused when it is a link or not what it
        should be: never followed (meshd.adapters.safe_files)."""
        try:
            return safe_files.lstat(path, directory=directory)
        except safe_files.UnsafeFile as exc:
            raise Refused(f"{exc}: remove it (and find out who put it there)") from None

    def read(self, target: str) -> bytes | None:
        """The bytes of the regular file ``target`` (None: absent), never through a link."""
        path = self.path(target)
        if self._lstat(path) is None:
            return None
        try:
            return safe_files.read_bytes(path)
        except safe_files.UnsafeFile as exc:
            raise Refused(f"{exc}: remove it (and find out who put it there)") from None
        except OSError as exc:
            raise StepError(f"{path}: {exc.strerror or exc}") from None

    def _metadata_fixes(self, st: os.stat_result, mode: int, owned: bool) -> list[str]:
        fixes = []
        if stat.S_IMODE(st.st_mode) != mode:
            fixes.append(f"mode {stat.S_IMODE(st.st_mode):04o} -> {mode:04o}")
        ids = self._ids(owned)
        if ids is not None and (st.st_uid, st.st_gid) != ids:
            fixes.append(f"owner {st.st_uid}:{st.st_gid} -> {ids[0]}:{ids[1]}")
        return fixes

    def _apply_metadata(self, path: Path, mode: int, owned: bool, directory: bool) -> None:
        """On a descriptor opened without following a link, never by path."""
        try:
            safe_files.set_mode_owner(path, mode, self._ids(owned), directory=directory)
        except safe_files.UnsafeFile as exc:
            raise Refused(f"{exc}: remove it (and find out who put it there)") from None
        except OSError as exc:
            raise StepError(f"{path}: {exc.strerror or exc}") from None

    def directory(self, target: str, mode: int, *, owned: bool = False) -> None:
        path = self.path(target)
        st = self._lstat(path, directory=True)
        if st is None:
            self.changed(f"create directory {target} ({mode:04o}{self._owner_text(owned)})")
            if not self.dry_run:
                path.mkdir(parents=True, mode=mode)
                self._apply_metadata(path, mode, owned, directory=True)
            return
        fixes = self._metadata_fixes(st, mode, owned)
        if fixes:
            self.changed(f"directory {target}: {', '.join(fixes)}")
            if not self.dry_run:
                self._apply_metadata(path, mode, owned, directory=True)
        else:
            self.unchanged(f"directory {target}")

    def file(self, target: str, content: bytes, mode: int, *, owned: bool = False) -> bool:
        """Make ``target`` hold ``content``; True when anything changed (or would). A link
        in its place is refused, never followed."""
        path = self.path(target)
        st = self._lstat(path)
        if st is not None and self.read(target) == content:
            fixes = self._metadata_fixes(st, mode, owned)
            if not fixes:
                self.unchanged(f"file {target}")
                return False
            self.changed(f"file {target}: {', '.join(fixes)}")
            if not self.dry_run:
                self._apply_metadata(path, mode, owned, directory=False)
            return True
        verb = "replace" if st is not None else "write"
        self.changed(f"{verb} {target} ({mode:04o}{self._owner_text(owned)})")
        if not self.dry_run:
            self._write(path, content, mode, owned)
        return True

    def _write(self, path: Path, content: bytes, mode: int, owned: bool) -> None:
        """A new file beside ``path`` (O_EXCL, a fresh name), its mode and owner set on the
        descriptor, renamed over it (meshd.adapters.safe_files)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            safe_files.write_atomically(path, content, mode, self._ids(owned))
        except OSError as exc:
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
        st = self._lstat(path)
        fixes = self._metadata_fixes(st, mode, owned=True) if st is not None else []
        if fixes:
            self.changed(f"file {target}: {', '.join(fixes)}")
            if not self.dry_run:
                self._apply_metadata(path, mode, owned=True, directory=False)

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

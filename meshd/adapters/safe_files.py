"""Files written where another user may have planted a link: the state directory.

The ``meshd`` user owns ``/var/lib/meshd``, and root's tools write there too (``meshd
keygen``, ``meshd invite``, provisioning/provision, ``meshd leave``). The owner of a
directory may put anything in it: a symbolic link ``identity.key -> /etc/shadow``, a hard
link, a FIFO. Root following that link would rewrite, chmod or chown the file it points to
and hand it to ``meshd`` (docs/threat-model.md, "Local privilege"). So nothing here follows
a link:

- a file is opened with ``O_NOFOLLOW`` and checked on the open file descriptor (a regular
  file, and for a change of mode or owner, one with no other hard link);
- a file is written through a temporary file made with ``O_CREAT | O_EXCL | O_NOFOLLOW``
  under a fresh name beside it (``tempfile.mkstemp``), given its mode and owner on the
  descriptor (``fchmod``, ``fchown``) and renamed over the target: a rename replaces a link
  planted there, never what it points to; the temporary file goes again on any failure
  (``unlink`` never follows a link either);
- an existing file or directory gets its mode and owner on a descriptor opened with
  ``O_NOFOLLOW``, never by path.

A path that should be a regular file (or a directory) and is a link or anything else is
refused with ``UnsafeFile``, an ``OSError`` whose message names the path and says why, so
that every command's existing ``except OSError`` prints it. Where a library opens files by
path itself (SQLite), ``as_owner_of`` makes root's work there with the directory owner's
rights, so that following a link reaches nothing that owner could not reach anyway.

Standard library only: provisioning uses it before meshd's dependencies are installed.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

Owner = tuple[int, int]  # uid, gid

# O_NONBLOCK: a FIFO planted in place of a file must not hang a root tool in open().
_OPEN = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class UnsafeFile(OSError):
    """A path root would write, chmod or chown is a link or not what it should be."""


def _opened(path: Path, flags: int, directory: bool) -> int:
    try:
        fd = os.open(path, flags | _OPEN | (os.O_DIRECTORY if directory else 0))
    except OSError:
        if os.path.islink(path):  # ELOOP, or ENOTDIR for O_DIRECTORY on a link
            raise UnsafeFile(f"{path}: is a symbolic link: not following it") from None
        raise
    try:
        st = os.fstat(fd)
        if not directory and not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: Path, flags: int = os.O_RDONLY) -> int:
    """A descriptor of the regular file at ``path``, never through a link (``UnsafeFile``)."""
    return _opened(path, flags, directory=False)


def read_bytes(path: Path) -> bytes:
    """The bytes of the regular file at ``path``, never through a link."""
    with os.fdopen(open_regular(path), "rb") as f:
        return f.read()


def lstat(path: Path, *, directory: bool = False) -> os.stat_result | None:
    """``path``'s own status, None when nothing is there; ``UnsafeFile`` when it is a link
    or not a regular file (a directory with ``directory``)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFile(f"{path}: is a symbolic link: not following it")
    wanted, what = (stat.S_ISDIR, "a directory") if directory else (stat.S_ISREG, "a regular file")
    if not wanted(st.st_mode):
        raise UnsafeFile(f"{path}: not {what}")
    return st


def set_mode_owner(
    path: Path, mode: int, owner: Owner | None = None, *, directory: bool = False
) -> None:
    """Give the existing file (or directory) at ``path`` ``mode`` and ``owner`` (None: keep
    it), on a descriptor opened without following a link. A file with another hard link is
    refused: changing it would change that other name's file too."""
    fd = _opened(path, os.O_RDONLY, directory)
    try:
        links = os.fstat(fd).st_nlink
        if not directory and links > 1:
            raise UnsafeFile(f"{path}: has {links} hard links: not changing its mode or owner")
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, mode: int, owner: Owner | None = None) -> None:
    """Make ``path`` hold ``data`` with ``mode`` and ``owner``, all at once: a new file
    beside it, synced, renamed over it (which replaces a link there, not its target)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), mode)
            if owner is not None:
                os.fchown(out.fileno(), *owner)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def create(path: Path, mode: int, owner: Owner | None = None) -> None:
    """A new empty file at ``path`` with ``mode`` and ``owner``: ``O_EXCL`` refuses
    anything already there (a link included), the owner is set on the descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _OPEN, 0o600)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)


def directory_owner(directory: Path) -> Owner | None:
    """Whom root gives what it makes in ``directory``: its owner, when this is root and the
    directory is another user's (the state directory is ``meshd``'s); else None."""
    st = os.stat(directory)
    return (st.st_uid, st.st_gid) if os.geteuid() == 0 and st.st_uid != 0 else None


@contextmanager
def as_owner_of(directory: Path) -> Iterator[None]:
    """Within, a root process acts with the rights of ``directory``'s owner (effective uid,
    gid and no supplementary groups), so that what a library opens there by path (SQLite
    follows links, and makes its journals beside what it opened) is only what that owner
    could open, and what it creates is that owner's. Anyone else, or a directory root owns:
    nothing changes. The process must be single-threaded meanwhile (a CLI command)."""
    owner = directory_owner(directory)
    if owner is None:
        yield
        return
    groups, egid = os.getgroups(), os.getegid()
    os.setgroups([])
    os.setegid(owner[1])
    os.seteuid(owner[0])
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)
        os.setgroups(groups)

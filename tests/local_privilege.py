"""What the local privilege tests share (docs/threat-model.md, "Local privilege"): a link
planted in a state directory and the check that its target was left alone, a directory
another user can reach, and running a function in a child process as that user.

pytest's own temporary directories sit under a 0700 directory of root's, which an
unprivileged user cannot pass through; ``reachable_dir`` is one it can."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

NOBODY = 65534  # uid and gid of nobody / nogroup on Debian
VICTIM = b"root's secret\n"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")


def plant(directory: Path, name: str) -> Path:
    """``directory/name -> victim``: a file of this user's (root's, in CI), 0600, that the
    directory's owner must not get; the victim sits beside the directory."""
    victim = directory.parent / f"victim-{directory.name}-{name}"
    victim.write_bytes(VICTIM)
    victim.chmod(0o600)
    (directory / name).symlink_to(victim)
    return victim


def untouched(victim: Path) -> None:
    """The victim's bytes, mode and owner are as ``plant`` left them."""
    st = victim.stat()
    assert victim.read_bytes() == VICTIM
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, os.getuid(), os.getgid())


@contextmanager
def reachable_dir() -> Iterator[Path]:
    """A fresh directory under /tmp, 0711: any user passes through it, none lists it."""
    path = Path(tempfile.mkdtemp(prefix="meshd-privilege-", dir="/tmp"))
    try:
        path.chmod(0o711)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_user(uid: int, work: Callable[[], Any]) -> Any:
    """``work()`` in a forked child that dropped to ``uid`` (its group too, no other
    groups); its result, or its exception raised here again."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        status = 0
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                outcome: tuple[bool, Any] = (True, work())
            except Exception as exc:  # handed to the parent, which raises it
                outcome = (False, exc)
            with os.fdopen(write, "wb") as out:
                pickle.dump(outcome, out)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as got:
        data = got.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the child failed before answering"
    ok, value = pickle.loads(data)
    if not ok:
        raise value
    return value

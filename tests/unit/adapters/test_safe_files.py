"""meshd.adapters.safe_files: root writing into a directory another user owns follows no
link that user planted there: the link's target is neither rewritten, chmodded nor
chowned, and the write either replaces the link or is refused with the path and why."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from meshd.adapters import identity, safe_files, trust
from tests.local_privilege import NOBODY, needs_root, plant, reachable_dir, untouched


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    return state


def test_a_write_replaces_a_planted_link_and_leaves_its_target(state: Path) -> None:
    victim = plant(state, "blocked")
    safe_files.write_atomically(state / "blocked", b"new\n", 0o644)
    untouched(victim)
    written = state / "blocked"
    assert not written.is_symlink() and written.read_bytes() == b"new\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    assert sorted(p.name for p in state.iterdir()) == ["blocked"]  # no temporary file left


def test_the_daemons_state_writers_replace_a_planted_link(state: Path) -> None:
    names = (trust.CHAIN_FILE, trust.REVOCATIONS_FILE)
    # Where they used to write first, with O_TRUNC: a fixed name beside the file.
    old_temporary = ("mesh.chain.tmp", "revocations.tmp")
    victims = [plant(state, name) for name in (*names, *old_temporary)]
    trust.save_chain(state, [])
    trust.save_revocations(state, trust.RevocationSet(bytes(16), ["admin"]))
    for victim in victims:
        untouched(victim)
    assert not any((state / name).is_symlink() for name in names)


@needs_root
def test_mode_and_owner_are_set_on_the_new_file_before_it_is_in_place(state: Path) -> None:
    victim = plant(state, "invite.token")
    safe_files.write_atomically(state / "invite.token", b"t\n", 0o600, (NOBODY, NOBODY))
    untouched(victim)
    st = (state / "invite.token").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, NOBODY, NOBODY)


def test_a_failed_write_leaves_no_temporary_file(state: Path) -> None:
    (state / "blocked").mkdir()  # a rename cannot put a file over a directory
    with pytest.raises(IsADirectoryError):
        safe_files.write_atomically(state / "blocked", b"x", 0o644)
    assert sorted(p.name for p in state.iterdir()) == ["blocked"]


@pytest.mark.parametrize("owner", [None, (NOBODY, NOBODY)])
def test_mode_and_owner_of_a_link_are_refused(state: Path, owner: safe_files.Owner | None) -> None:
    victim = plant(state, "identity.key")
    with pytest.raises(safe_files.UnsafeFile, match="identity.key: is a symbolic link"):
        safe_files.set_mode_owner(state / "identity.key", 0o644, owner)
    untouched(victim)


def test_a_directory_link_is_refused_too(state: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (state / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(safe_files.UnsafeFile, match="is a symbolic link"):
        safe_files.set_mode_owner(state / "sub", 0o755, directory=True)
    assert stat.S_IMODE((tmp_path / "elsewhere").stat().st_mode) == 0o700


def test_a_hard_link_is_not_given_another_mode(state: Path) -> None:
    victim = plant(state, "victim")
    (state / "victim").unlink()
    os.link(victim, state / "identity.key")  # where protected_hardlinks does not stop it
    with pytest.raises(safe_files.UnsafeFile, match="has 2 hard links"):
        safe_files.set_mode_owner(state / "identity.key", 0o644)
    untouched(victim)


def test_a_fifo_in_place_of_a_file_is_refused_without_hanging(state: Path) -> None:
    os.mkfifo(state / "identity.key")
    with pytest.raises(safe_files.UnsafeFile, match="not a regular file"):
        safe_files.read_bytes(state / "identity.key")
    with pytest.raises(identity.KeyFileError, match="not a regular file"):
        identity.read_private(state / "identity.key")


def test_a_key_is_never_read_or_made_through_a_link(state: Path) -> None:
    victim = plant(state, identity.IDENTITY_KEY)
    with pytest.raises(identity.KeyFileError, match="identity.key: is a symbolic link"):
        identity.read_private(state / identity.IDENTITY_KEY)
    with pytest.raises(identity.KeyFileError, match="identity.key: already exists"):
        identity.generate(state)
    untouched(victim)
    (state / identity.IDENTITY_KEY).unlink()
    (state / identity.IDENTITY_KEY).symlink_to(state.parent / "not-there")  # dangling
    with pytest.raises(identity.KeyFileError, match="already exists"):
        identity.generate(state)
    assert not (state.parent / "not-there").exists()


def test_public_files_replace_a_planted_link(state: Path) -> None:
    victims = [plant(state, name) for name in (identity.IDENTITY_PUB, identity.WIREGUARD_PUB)]
    ident = identity.generate(state)
    for victim in victims:
        untouched(victim)
    assert (state / identity.IDENTITY_PUB).read_text() == f"{ident.node_id}\n"


@needs_root
def test_as_the_owner_root_reaches_only_what_the_owner_may() -> None:
    with reachable_dir() as base:
        state = base / "state"
        state.mkdir()
        victim = plant(state, "invites.sqlite")
        os.chown(state, NOBODY, NOBODY)
        with safe_files.as_owner_of(state):
            assert (os.geteuid(), os.getegid(), os.getgroups()) == (NOBODY, NOBODY, [])
            with pytest.raises(PermissionError):
                (state / "invites.sqlite").read_bytes()
            (state / "made").write_bytes(b"x")
        assert (os.geteuid(), os.getegid()) == (0, 0)
        assert (state / "made").stat().st_uid == NOBODY
        untouched(victim)

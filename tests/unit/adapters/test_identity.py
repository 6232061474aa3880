from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshd.adapters import identity
from meshd.core import addressing


def test_generate_writes_keys_0600_and_public_files(tmp_path: Path) -> None:
    ident = identity.generate(tmp_path / "s")
    for name in (identity.IDENTITY_KEY, identity.WIREGUARD_KEY):
        assert stat.S_IMODE((tmp_path / "s" / name).stat().st_mode) == 0o600
    assert (tmp_path / "s" / identity.IDENTITY_PUB).read_text().strip() == ident.node_id
    assert (tmp_path / "s" / identity.WIREGUARD_PUB).read_text().strip() == (
        ident.wireguard_public_b64
    )
    assert len(ident.node_id) == 43 and "=" not in ident.node_id
    loaded = identity.load(tmp_path / "s")
    assert loaded.node_id == ident.node_id
    assert loaded.wireguard_public == ident.wireguard_public
    assert "key" not in repr(loaded).lower().replace("node_id", "")


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    identity.generate(tmp_path)
    with pytest.raises(identity.KeyFileError, match="already exists"):
        identity.generate(tmp_path)


def test_load_refuses_open_or_missing_or_malformed(tmp_path: Path) -> None:
    identity.generate(tmp_path)
    (tmp_path / identity.WIREGUARD_KEY).chmod(0o640)
    with pytest.raises(identity.KeyFileError, match="wireguard.key: key file mode is 0o640"):
        identity.load(tmp_path)
    (tmp_path / identity.WIREGUARD_KEY).chmod(0o600)
    (tmp_path / identity.WIREGUARD_KEY).write_text("not base64!\n")
    with pytest.raises(identity.KeyFileError, match="not base64"):
        identity.load(tmp_path)
    (tmp_path / identity.IDENTITY_KEY).unlink()
    with pytest.raises(identity.KeyFileError, match="identity.key: key file is missing"):
        identity.load(tmp_path)


@given(st.binary(min_size=32, max_size=32))
def test_node_id_round_trips(raw: bytes) -> None:
    node_id = identity.node_id_from_public(raw)
    assert len(node_id) == identity.NODE_ID_LENGTH
    assert identity.public_from_node_id(node_id) == raw


@pytest.mark.parametrize("bad", ["", "x" * 42, "x" * 44, "*" * 43])
def test_bad_node_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        identity.public_from_node_id(bad)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_derived_names_and_addresses(a: bytes, b: bytes) -> None:
    import ipaddress

    ida, idb = identity.node_id_from_public(a), identity.node_id_from_public(b)
    name = addressing.link_interface_name("mw", ida, idb)
    assert len(name) <= 15 and name.startswith(addressing.own_interface_prefix("mw", ida))
    prefix = ipaddress.IPv6Network("fd6d:6573:6864::/48")
    assert addressing.mesh_ipv6(prefix, ida) in prefix
    assert addressing.link_local(ida) in ipaddress.IPv6Network("fe80::/64")

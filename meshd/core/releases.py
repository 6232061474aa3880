"""Releases learned from neighbours, and their artifacts fetched from them (pure: no files,
no clocks; issue 20, updates over the mesh).

A node holds at most one release whole (the newest it fetched, or one published on it:
``held``), and offers it to every neighbour that announced the ``releases`` feature: a
neighbour that sends RELEASE holds that release's whole artifact and serves it. A newer
release heard of is fetched (``fetching``), whatever this node's stage: the stage decides
when it is installed, not when it is fetched, so a late node still passes it on.

What a neighbour says is checked against what it is entitled to:

- a manifest is taken only for this mesh, signed by one of its current admin keys and by
  as many as the mesh definition's threshold (every signature of theirs good), and newer
  than what the node holds or fetches; an older one is ignored (a neighbour that has not
  fetched the newest yet), anything else refused with its reason (``release_other_mesh``,
  ``release_not_admin``, ``release_bad_signature``, ``release_short_of_quorum``,
  ``release_malformed``, ``release_conflict``: another manifest with a serial already held);
- a part is taken only as the answer to the one fetch outstanding, from the neighbour it
  was asked of, exactly as long as asked (``release_unasked`` otherwise), so the artifact
  grows from its start and a neighbour cannot make the node store what it never asked for;
- a fetch is answered only for the release held (``release_not_held``), clipped to its size.

One part is asked at a time, of one neighbour that holds the release, at most every
``ASK_EVERY_S``: 64 KiB/s, half of what a session may receive at all (SessionSettings.
receive_rate), the rest left to routing and everything else. A part not answered within
``ANSWER_WITHIN_S`` is asked of the next neighbour holding it. Once every octet is in, the
shell checks the artifact's size and SHA-256 against the manifest (``fetched``); one that
does not match is dropped and fetched again from the start, from the next neighbour.
After a restart a fetch goes on from where its artifact had come (``resume``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from meshd.core.membership import MembershipError
from meshd.core.proto.release import ReleaseError, ReleaseManifest, check_for_mesh, decode_signed
from meshd.core.proto.session import MAX_RELEASE_PART, ReleaseFetch, ReleasePart

ASK_EVERY_S = 0.5
ANSWER_WITHIN_S = 10.0
BEFORE_RESTART = ""  # in served_by: parts fetched before a restart, from whoever it was


@dataclass
class Fetching:
    """A newer release than the one held, and how much of its artifact is in."""

    manifest: ReleaseManifest
    encoded: bytes
    received: int = 0  # octets from the artifact's start
    sources: dict[str, None] = field(default_factory=dict)  # holders, in the order heard
    asked: tuple[str, int, int, float] | None = None  # node id, offset, length, when
    served_by: set[str] = field(default_factory=set)  # who answered this round's parts
    next_at: float = float("-inf")  # monotonic: the next part's ask, not before

    @property
    def complete(self) -> bool:
        return self.received >= self.manifest.artifact_size


@dataclass
class Releases:
    mesh_id: bytes
    admins: Callable[[], Collection[str]]  # the current admin keys (they rotate)
    threshold: Callable[[], int] = lambda: 1  # how many of them must sign a release
    held: ReleaseManifest | None = None
    held_encoded: bytes = b""
    fetching: Fetching | None = None

    @property
    def newest_serial(self) -> int:
        serials = [0]
        if self.held is not None:
            serials.append(self.held.serial)
        if self.fetching is not None:
            serials.append(self.fetching.manifest.serial)
        return max(serials)

    def hold(self, manifest: ReleaseManifest, encoded: bytes) -> None:
        """``manifest``'s whole artifact is here (fetched and checked, or published here);
        ``encoded``: the manifest as it came, with its signatures (``check``)."""
        self.held, self.held_encoded = manifest, encoded
        if self.fetching is not None and self.fetching.manifest.serial <= manifest.serial:
            self.fetching = None

    def check(self, data: bytes) -> ReleaseManifest:
        """The manifest in ``data`` if this mesh's admins signed it, as many as its
        threshold (whatever its serial); ReleaseError (its ``code`` a refusal's) if not."""
        try:
            signed = decode_signed(data)
        except MembershipError as exc:
            raise ReleaseError("release_malformed", str(exc)) from None
        return check_for_mesh(
            signed, self.mesh_id, self.admins(), self.threshold(), taken_serial=-1
        )

    def heard(self, node_id: str, data: bytes) -> tuple[str | None, bool]:
        """A neighbour's RELEASE: (why it is refused, or None; whether a fetch started)."""
        try:
            manifest = self.check(data)
        except ReleaseError as exc:
            return exc.code, False
        fetching = self.fetching
        for known in (self.held, fetching.manifest if fetching else None):
            if known is not None and manifest.serial == known.serial:
                if manifest != known:  # the same with other admins' signatures is no news
                    return "release_conflict", False
                if fetching is not None and known is fetching.manifest:
                    fetching.sources.setdefault(node_id, None)
                return None, False
        if manifest.serial < self.newest_serial:
            return None, False  # a neighbour that has not fetched the newest yet
        self.fetching = Fetching(manifest, data, sources={node_id: None})
        return None, True

    def resume(self, data: bytes, on_disk: int) -> ReleaseManifest | None:
        """A fetch under way before a restart, taken again: ``data`` its manifest,
        ``on_disk`` the octets of its artifact the shell found. It goes on from the last
        whole part before the artifact's end (what followed may not have reached the disk,
        and the last part is asked again so that the whole is checked), once neighbours
        offer the release again; who served the parts before is not known, so a bad
        artifact is then blamed on no one. None when the manifest no longer checks (an
        admin key rotated away) or is not newer than the release held."""
        try:
            manifest = self.check(data)
        except ReleaseError:
            return None
        if manifest.serial <= self.newest_serial:
            return None
        last = max(0, min(on_disk, manifest.artifact_size - 1))
        received = last // MAX_RELEASE_PART * MAX_RELEASE_PART
        self.fetching = Fetching(manifest, data, received, served_by={BEFORE_RESTART})
        return manifest

    def ask(self, now: float, up: Collection[str]) -> tuple[str, ReleaseFetch] | None:
        """The next part to ask for and of whom, if one is due: ``up`` are the neighbours
        whose sessions carry the feature now."""
        fetching = self.fetching
        if fetching is None or fetching.complete or now < fetching.next_at:
            return None
        if fetching.asked is not None:
            late, _, _, at = fetching.asked
            if now < at + ANSWER_WITHIN_S and late in up:
                return None
            fetching.sources.pop(late, None)  # slow or gone: the next one, and it last
            fetching.sources[late] = None
            fetching.asked = None
        holder = next((h for h in fetching.sources if h in up), None)
        if holder is None:
            return None
        size = fetching.manifest.artifact_size
        length = min(MAX_RELEASE_PART, size - fetching.received)
        fetching.asked = (holder, fetching.received, length, now)
        fetching.next_at = now + ASK_EVERY_S
        return holder, ReleaseFetch(fetching.manifest.serial, fetching.received, length)

    def part(self, node_id: str, msg: ReleasePart) -> str | None:
        """A neighbour's RELEASE_PART: None when it is the answer to the fetch outstanding
        (then its octets go at ``msg.offset`` of the artifact), else the refusal's code."""
        fetching = self.fetching
        if fetching is None or fetching.asked is None:
            return "release_unasked"
        holder, offset, length, _ = fetching.asked
        if (node_id, msg.serial, msg.offset, len(msg.data)) != (
            holder,
            fetching.manifest.serial,
            offset,
            length,
        ):
            return "release_unasked"
        fetching.received += length
        fetching.asked = None
        fetching.served_by.add(node_id)
        return None

    def fetched(self, matches: bool) -> ReleaseManifest | None:
        """Every octet is in and the shell checked it against the manifest: the release now
        held if it ``matches``; else it is fetched again from the start, first from
        another neighbour."""
        fetching = self.fetching
        assert fetching is not None and fetching.complete
        if matches:
            self.hold(fetching.manifest, fetching.encoded)
            return fetching.manifest
        first = next(iter(fetching.sources), None)
        if first is not None:
            fetching.sources.pop(first)
            fetching.sources[first] = None
        fetching.received = 0
        fetching.served_by = set()
        return None

    def serve(self, msg: ReleaseFetch) -> tuple[int, int] | str:
        """A neighbour's RELEASE_FETCH: the (offset, length) of the held artifact to send,
        or the refusal's code."""
        held = self.held
        if held is None or msg.serial != held.serial or msg.offset >= held.artifact_size:
            return "release_not_held"
        return msg.offset, min(msg.length, held.artifact_size - msg.offset)

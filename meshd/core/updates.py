"""Taking a release onto this node, and giving it back (pure: no files, no clocks; issue 20).

The daemon fetches releases from its neighbours (meshd.core.releases); it never installs
one, as it may not write its own code. ``meshd update apply`` (by hand) and ``meshd update
auto`` (the timer, when the node's stage takes the release) do, as root:

1. the held release's manifest is checked again (this mesh, a current admin, newer than
   the last one taken, not one rolled back here before) and its artifact against it;
2. meshd is installed into a virtual environment of its own beside the running one, and
   the node's ``venv`` link is switched to it; meshd is restarted into it;
3. the ``trial`` is watched for the manifest's ``health_window_s``: it is confirmed as
   soon as the new meshd is as healthy as the old one was (``judge``); at the window's end
   it is rolled back (the link switched back, meshd restarted) and the release refused on
   this node for good, with its reason.

A trial is written down before the link is switched, so one a reboot interrupts is
finished by the next ``meshd update auto``: confirmed if healthy by then, else rolled back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from meshd.core.proto.release import ReleaseManifest

UPLINK_UP = "up"


@dataclass(frozen=True)
class Health:
    """What ``judge`` reads of a node's status (``meshd status --json``); ``answered``
    False: no daemon answered on its control socket."""

    answered: bool
    version: str | None = None
    neighbours_up: int = 0
    routes: int = 0
    uplink: str | None = None  # its check's state; None: the node has no uplink

    @classmethod
    def of(cls, status: Mapping[str, Any] | None) -> Health:
        if status is None:
            return cls(answered=False)
        releases = status.get("releases") or {}
        uplink = (status.get("gateway") or {}).get("uplink")
        return cls(
            answered=True,
            version=releases.get("running"),
            neighbours_up=sum(1 for n in status.get("neighbours", ()) if n.get("state") == "up"),
            routes=len(status.get("routes", ())),
            uplink=uplink["state"] if uplink else None,
        )

    def describe(self) -> str:
        if not self.answered:
            return "no answer"
        uplink = "no uplink" if self.uplink is None else f"uplink {self.uplink}"
        return (
            f"meshd {self.version}, {self.neighbours_up} neighbours up, "
            f"{self.routes} routes, {uplink}"
        )


def judge(before: Health, now: Health, version: str) -> str | None:
    """None when the new meshd (``version``) is healthy; else why not. Healthy: it answers
    as ``version``, and what worked before the restart works again: a neighbour up, routes,
    the uplink check (each only where the old meshd had it)."""
    if not now.answered:
        return "meshd does not answer on its control socket"
    if now.version != version:
        return f"meshd {now.version} answers, not {version}"
    if before.neighbours_up and not now.neighbours_up:
        return f"no neighbour is up ({before.neighbours_up} were before the update)"
    if before.routes and not now.routes:
        return f"no routes ({before.routes} before the update)"
    if before.uplink == UPLINK_UP and now.uplink != UPLINK_UP:
        return f"the uplink check says {now.uplink} (up before the update)"
    return None


@dataclass(frozen=True)
class Trial:
    """A release installed and switched to, not yet confirmed."""

    serial: int
    version: str
    directory: str  # the new virtual environment
    previous: str  # the one it replaced: what a rollback switches back to
    deadline: float  # Unix seconds: rolled back unless healthy by then
    before: Health  # the old meshd's health, what the new one must match


@dataclass(frozen=True)
class Record:
    """What the node's updates have done, kept beside its virtual environments."""

    taken: int = 0  # the newest release serial confirmed here
    current: str | None = None  # its virtual environment (None: the one provisioned)
    previous: str | None = None  # the one before it (``meshd update rollback`` by hand)
    trial: Trial | None = None
    refused: dict[int, str] = field(default_factory=dict)  # serial -> why it was rolled back

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["refused"] = {str(k): v for k, v in sorted(self.refused.items())}
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Record:
        """ValueError (KeyError, TypeError) for anything ``to_json`` does not write."""
        trial = obj.get("trial")
        if trial is not None:
            trial = Trial(**{**trial, "before": Health(**trial["before"])})
        return cls(
            taken=int(obj["taken"]),
            current=obj["current"],
            previous=obj["previous"],
            trial=trial,
            refused={int(k): str(v) for k, v in obj["refused"].items()},
        )

    def concerns(self, now: float) -> list[str]:
        """What an operator should know (``meshd status``, the dashboard): a trial under
        way, and a release rolled back here since the last one taken."""
        said = []
        if (t := self.trial) is not None:
            left = max(0, round(t.deadline - now))
            said.append(f"meshd {t.version} (release {t.serial}) on trial: rolled back "
                        f"unless healthy within {left} s")  # fmt: skip
        newest = max(self.refused, default=0)
        if newest > self.taken:
            said.append(f"release {newest} rolled back here: {self.refused[newest]}")
        return said

    def start(self, trial: Trial) -> Record:
        return replace(self, trial=trial)

    def confirmed(self) -> Record:
        assert self.trial is not None
        t = self.trial
        return replace(self, taken=t.serial, current=t.directory, previous=t.previous, trial=None)

    def rolled_back(self, why: str) -> Record:
        assert self.trial is not None
        return replace(self, trial=None).refuse(self.trial.serial, why)

    def refuse(self, serial: int, why: str) -> Record:
        """Release ``serial`` is not taken again on this node: ``why``."""
        return replace(self, refused={**self.refused, serial: why})

    def given_back(self, why: str) -> Record:
        """The confirmed release given back by hand: the one before it is current again."""
        return replace(self, current=self.previous, previous=None).refuse(self.taken, why)


def not_due(
    manifest: ReleaseManifest,
    record: Record,
    stage: str,
    running: str,
    now: float,
    by_hand: bool,
) -> str | None:
    """None when this node takes ``manifest`` now; else why not. By hand (``meshd update
    apply``) the stage does not count; by the timer it does, ``manual`` never."""
    if record.trial is not None:
        return f"release {record.trial.serial} is on trial"
    if manifest.serial in record.refused:
        return f"release {manifest.serial} was rolled back here: {record.refused[manifest.serial]}"
    if manifest.serial <= record.taken:
        return f"release {manifest.serial} is taken already (meshd {running} runs)"
    if manifest.meshd_version == running:
        return f"meshd {running} runs already"
    if by_hand:
        return None
    start = manifest.stage_start(stage)
    if start is None:
        return f"stage {stage}: only `meshd update apply` takes a release"
    if now < start:
        return f"stage {stage} takes release {manifest.serial} from Unix time {start}"
    return None

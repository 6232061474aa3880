"""meshd.core.updates: whether a node takes a release now, whether the new meshd is as
healthy as the old one was, and what the record keeps of trials."""

from __future__ import annotations

import json

import pytest
from nacl.signing import SigningKey

from meshd.core.keys import node_id_from_public
from meshd.core.membership.messages import NO_SIGNATURE
from meshd.core.proto.release import ReleaseManifest
from meshd.core.updates import Health, Record, Trial, judge, not_due

NOW = 1_800_000_000
UP = Health(True, "0.2.0", neighbours_up=2, routes=5, uplink="up")


def manifest(serial: int = 3, version: str = "0.2.0", interval: int = 3600) -> ReleaseManifest:
    key = SigningKey(bytes(range(32)))
    return ReleaseManifest(
        mesh_id=bytes(16),
        issuer=node_id_from_public(bytes(key.verify_key)),
        serial=serial,
        issued_at=NOW,
        meshd_version=version,
        artifact_name=f"meshd-{version}-py3-none-any.whl",
        artifact_size=1,
        artifact_sha256=bytes(32),
        stage_interval_s=interval,
        health_window_s=600,
        signature=NO_SIGNATURE,
    ).sign(key)


def trial(serial: int = 3) -> Trial:
    return Trial(serial, "0.2.0", "/opt/meshd/versions/0.2.0-3", "/opt/meshd/versions/p",
                 NOW + 600.0, UP)  # fmt: skip


def test_health_is_read_from_the_status_the_daemon_answers() -> None:
    status = {
        "releases": {"running": "0.2.0"},
        "neighbours": [{"state": "up"}, {"state": "connecting"}, {"state": "up"}],
        "routes": [{}] * 5,
        "gateway": {"uplink": {"state": "up"}},
    }
    assert Health.of(status) == UP
    assert Health.of(None) == Health(answered=False)
    no_uplink = Health.of({"releases": None, "neighbours": [], "routes": [], "gateway": {}})
    assert no_uplink == Health(True, None, 0, 0, None)
    assert no_uplink.describe() == "meshd None, 0 neighbours up, 0 routes, no uplink"


@pytest.mark.parametrize(
    ("now", "why"),
    [
        (UP, None),
        (Health(answered=False), "meshd does not answer on its control socket"),
        (Health(True, "0.1.0", 2, 5, "up"), "meshd 0.1.0 answers, not 0.2.0"),
        (Health(True, "0.2.0", 0, 5, "up"), "no neighbour is up (2 were before the update)"),
        (Health(True, "0.2.0", 1, 0, "up"), "no routes (5 before the update)"),
        (Health(True, "0.2.0", 1, 5, "down"), "the uplink check says down (up before the update)"),
        (Health(True, "0.2.0", 1, 1, "up"), None),  # one neighbour of two is enough
    ],
)
def test_the_new_meshd_must_do_what_the_old_one_did(now: Health, why: str | None) -> None:
    assert judge(UP, now, "0.2.0") == why


def test_what_the_old_meshd_lacked_is_not_asked_of_the_new_one() -> None:
    alone = Health(True, "0.1.0", 0, 0, "down")
    assert judge(alone, Health(True, "0.2.0", 0, 0, None), "0.2.0") is None


def test_by_hand_the_stage_does_not_count_by_the_timer_it_does() -> None:
    m = manifest(interval=3600)
    fresh = Record()
    assert not_due(m, fresh, "manual", "0.1.0", NOW, by_hand=True) is None
    assert not_due(m, fresh, "manual", "0.1.0", NOW, by_hand=False) == (
        "stage manual: only `meshd update apply` takes a release"
    )
    assert not_due(m, fresh, "early", "0.1.0", NOW, by_hand=False) is None
    assert not_due(m, fresh, "late", "0.1.0", NOW + 3600, by_hand=False) == (
        f"stage late takes release 3 from Unix time {NOW + 7200}"
    )
    assert not_due(m, fresh, "late", "0.1.0", NOW + 7200, by_hand=False) is None


def test_a_release_rolled_back_taken_or_running_already_is_not_taken_again() -> None:
    m = manifest()
    assert not_due(m, Record(refused={3: "no routes"}), "early", "0.1.0", NOW, True) == (
        "release 3 was rolled back here: no routes"
    )
    assert not_due(m, Record(taken=3), "early", "0.1.0", NOW, True) == (
        "release 3 is taken already (meshd 0.1.0 runs)"
    )
    assert not_due(m, Record(), "early", "0.2.0", NOW, True) == "meshd 0.2.0 runs already"
    assert not_due(m, Record().start(trial(2)), "early", "0.1.0", NOW, True) == (
        "release 2 is on trial"
    )


def test_a_trial_is_confirmed_or_rolled_back_and_the_record_keeps_it() -> None:
    started = Record(taken=2, current="/opt/meshd/versions/p").start(trial())
    confirmed = started.confirmed()
    assert (confirmed.taken, confirmed.current, confirmed.previous, confirmed.trial) == (
        3, "/opt/meshd/versions/0.2.0-3", "/opt/meshd/versions/p", None)  # fmt: skip
    back = started.rolled_back("no routes")
    assert (back.taken, back.current, back.trial, back.refused) == (
        2, "/opt/meshd/versions/p", None, {3: "no routes"})  # fmt: skip
    given = confirmed.given_back("rolled back by hand")
    assert (given.current, given.previous, given.refused) == (
        "/opt/meshd/versions/p", None, {3: "rolled back by hand"})  # fmt: skip
    for record in (started, confirmed, back, given, Record()):
        assert Record.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_a_record_that_is_not_one_is_refused() -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        Record.from_json({"taken": 1})


def test_an_operator_hears_of_a_trial_and_of_a_release_rolled_back_since_the_last_taken() -> None:
    assert Record().concerns(NOW) == []
    on_trial = Record(taken=2, refused={1: "no routes"}).start(trial())
    assert on_trial.concerns(NOW + 100) == [
        "meshd 0.2.0 (release 3) on trial: rolled back unless healthy within 500 s"
    ]
    assert on_trial.rolled_back("no routes").concerns(NOW) == [
        "release 3 rolled back here: no routes"
    ]
    assert on_trial.confirmed().concerns(NOW) == []  # release 1 was before release 3

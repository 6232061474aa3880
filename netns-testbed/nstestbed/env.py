"""Where the testbed lives and how its processes are run, from the environment.

MESHD_TESTBED_DIR (state, one testbed per directory), MESHD_TESTBED_ID (namespace prefix).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from nstestbed.plan import DEFAULT_ID, DEFAULT_STATE_DIR, check_id

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTBED_DIR = REPO_ROOT / "netns-testbed"
ID_ENV, DIR_ENV = "MESHD_TESTBED_ID", "MESHD_TESTBED_DIR"


def testbed_id() -> str:
    """The testbed id; raises PlanError when MESHD_TESTBED_ID is not a valid one."""
    return check_id(os.environ.get(ID_ENV) or DEFAULT_ID)


def state_dir() -> Path:
    return Path(os.environ.get(DIR_ENV) or DEFAULT_STATE_DIR).absolute()


def daemon_argv() -> list[str]:
    """How meshd is run: this checkout's, with the testbed's Python."""
    return [sys.executable, "-m", "meshd"]


def child_env(socket: Path | None = None, config: Path | None = None) -> dict[str, str]:
    """Our environment, with ``import meshd`` working from the checkout and, for a node,
    MESHD_SOCKET naming its daemon's control socket and MESHD_CONFIG its config (what
    reads the node's files, such as ``meshd receipts export``, finds them by it)."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), str(TESTBED_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    # `meshd` on PATH runs this checkout's meshd (netns-testbed/bin/meshd).
    env["PATH"] = os.pathsep.join([str(TESTBED_DIR / "bin"), env.get("PATH", os.defpath)])
    if socket is not None:
        env["MESHD_SOCKET"] = str(socket)
    if config is not None:
        env["MESHD_CONFIG"] = str(config)
    return env

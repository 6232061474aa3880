"""What every tier shares: under ``CI=true`` a skipped netns test fails the session, and
Hypothesis has no deadline (tests check behaviour, not time: on a loaded 2-core machine a
property test's example may take longer than 200 ms, and that is no failure).

CI runs as root with everything install.sh installs, so a netns test that skips there
(no wireguard-go, no nft, not root) is one that did not run, and would otherwise pass the
build unnoticed: a tier that can skip itself away cannot fail. Elsewhere (a laptop, not
root) skips stay skips. Under CI they are still reported as skips, with their reasons, but
the session's exit status becomes "tests failed" and its summary names each one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("meshd", deadline=None)
settings.load_profile("meshd")

NETNS_TIER = Path(__file__).resolve().parent / "netns"
VM_TIER = Path(__file__).resolve().parent / "vm"  # its tests carry the netns mark too
NETNS_MARK = "netns"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The VM tier's tests first, in their order: test.sh runs them on one worker beside
    the netns tier on the other, and they take longest (pytest itself collects
    tests/netns before tests/vm, whatever order the paths are given in)."""
    items.sort(key=lambda item: not item.path.is_relative_to(VM_TIER))


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI") == "true":
        config.pluginmanager.register(NetnsSkipsFail(config.rootpath), "netns-skips-fail")


class NetnsSkipsFail:
    def __init__(self, rootpath: Path) -> None:
        self.rootpath = rootpath
        self.skipped: list[tuple[str, str]] = []  # node id, reason

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """A test marked ``netns`` skipped, in its setup (a ``skipif``) or its body."""
        if report.skipped and not hasattr(report, "wasxfail") and NETNS_MARK in report.keywords:
            self.skipped.append((report.nodeid, skip_reason(report)))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A netns module that skipped itself whole: it has no tests left to carry the mark."""
        if report.skipped and report.fspath:
            path = (self.rootpath / report.fspath).resolve()
            if path.is_relative_to(NETNS_TIER) or path.is_relative_to(VM_TIER):
                self.skipped.append((report.nodeid, skip_reason(report)))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # Not over an interruption or an internal or usage error: those say more.
        if self.skipped and session.exitstatus in (
            pytest.ExitCode.OK,
            pytest.ExitCode.TESTS_FAILED,
            pytest.ExitCode.NO_TESTS_COLLECTED,  # every module asked for skipped itself
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.skipped:
            return
        terminalreporter.section("netns tests skipped under CI=true", red=True, bold=True)
        terminalreporter.line(
            f"{len(self.skipped)} netns test(s) did not run; CI runs them as root with "
            "everything install.sh installs, so the session fails:",
            red=True,
        )
        for nodeid, reason in self.skipped:
            terminalreporter.line(f"  {nodeid}: {reason}", red=True)


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    # A skip's longrepr is (path, line number, "Skipped: reason").
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr)

"""netns-testbed/vm: QEMU guests in a testbed (see netns-testbed/README.md, "Guests").

    vm image [--arch amd64|arm64]          build (or find in the cache) the image; its path
    vm attach NODE [--payload DIR]         a guest takes invited NODE's place and boots
    vm exec NODE -- CMD...                 run CMD in the guest (bash -c), as root
    vm stop NODE [--kill]                  power off (or cut the power)
    vm tier [--arch A] [--record FILE]     the VM tier's tests (tests/vm) for one
                                           architecture, its transcript and timings
                                           written to FILE (markdown)

The testbed is the one ``MESHD_TESTBED_DIR`` / ``MESHD_TESTBED_ID`` name, as for
``testbed``; ``testbed down`` removes guests with everything else. Exit status: 0 done, 1
not possible, 2 bad request; ``exec`` exits with the command's status.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from nstestbed.build import BuildError

from vmbed import guest as vmguest
from vmbed import image as vmimage
from vmbed import wiring

REPO = Path(__file__).resolve().parents[2]


def _testbed() -> tuple[Path, str]:
    ident = os.environ.get("MESHD_TESTBED_ID", "mtb")
    return Path(os.environ.get("MESHD_TESTBED_DIR", "/run/meshd-testbed")), ident


def _guest(node: str, booting: bool = False) -> vmguest.Guest:
    """NODE's guest; its image is built (or found) only for a guest about to boot."""
    directory, ident = _testbed()
    arch = vmimage.host_arch()
    image = vmimage.build(arch) if booting else vmimage.location(arch)
    return vmguest.Guest(node, image, directory / "vms" / node, f"{ident}-{node}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vm", description="QEMU guests in a netns testbed")
    sub = p.add_subparsers(dest="command", required=True)
    img = sub.add_parser("image", help="build or find the image")
    img.add_argument("--arch", default=None, help="amd64 or arm64 (default: this machine's)")
    att = sub.add_parser("attach", help="a guest takes an invited node's place")
    att.add_argument("node")
    att.add_argument("--payload", help="a directory the guest sees read-only at /payload")
    ex = sub.add_parser("exec", help="run a command in the guest")
    ex.add_argument("node")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    st = sub.add_parser("stop", help="power the guest off")
    st.add_argument("node")
    st.add_argument("--kill", action="store_true", help="cut the power instead")
    tier = sub.add_parser("tier", help="run tests/vm for one architecture")
    tier.add_argument("--arch", default=None, help="amd64 or arm64 (default: this machine's)")
    tier.add_argument("--record", help="write the transcript and timings here (markdown)")
    args = p.parse_args(argv)
    if args.command == "tier":
        return _tier(args.arch or vmimage.host_arch(), args.record)
    try:
        if args.command == "image":
            built = vmimage.build(args.arch or vmimage.host_arch())
            print(built.directory)
        elif args.command == "attach":
            return _attach(args.node, args.payload)
        elif args.command == "exec":
            cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
            if not cmd:
                p.error("exec needs a command after --")
            res = _guest(args.node).run(" ".join(cmd), timeout=3600)
            sys.stdout.write(res.out)
            sys.stderr.write(res.err)
            return res.rc
        elif args.command == "stop":
            g = _guest(args.node)
            g.kill() if args.kill else g.stop()
    except (vmimage.ImageError, vmguest.GuestError, BuildError) as exc:
        print(f"vm: {exc}", file=sys.stderr)
        return 1
    return 0


def _tier(arch: str, record: str | None) -> int:
    """Build (or find) the image, then run tests/vm with MESHD_VM_ARCH=arch; say what it
    took. The guests' tests print their figures as ``vm.NAME=VALUE`` lines."""
    started = time.monotonic()
    cached = vmimage.cached(arch) is not None
    try:
        built = vmimage.build(arch)
    except (vmimage.ImageError, BuildError) as exc:
        print(f"vm: {exc}", file=sys.stderr)
        return 1
    image_s = time.monotonic() - started
    env = {**os.environ, "MESHD_VM_ARCH": arch}
    argv = [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", "tests/vm"]
    lines: list[str] = []
    tests_started = time.monotonic()
    with subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line.rstrip("\n"))
    tests_s = time.monotonic() - tests_started
    if record:
        Path(record).write_text(
            _transcript(arch, built, cached, image_s, tests_s, proc.returncode, lines)
        )
        print(f"vm: transcript in {record}")
    return proc.returncode


def _transcript(
    arch: str,
    built: vmimage.Image,
    cached: bool,
    image_s: float,
    tests_s: float,
    rc: int,
    lines: list[str],
) -> str:
    machine = subprocess.run(["uname", "-srm"], capture_output=True, text=True).stdout.strip()
    cores = os.cpu_count()
    figures = [ln.strip() for ln in lines if re.match(r"\s*vm\.\w+=", ln)]
    summary = next((ln for ln in reversed(lines) if re.search(r"passed|failed|error", ln)), "")
    image = "from the cache" if cached else f"built in {image_s:.0f} s"
    return "\n".join(
        [
            f"# VM tier, {arch}: {time.strftime('%Y-%m-%d')}",
            "",
            f"`netns-testbed/vm tier --arch {arch}` on {machine}, {cores} cores, guests under"
            f" TCG. Exit status {rc}: {summary.strip('= ')}.",
            "",
            f"- image: {built.directory.name} ({image})",
            f"- tests/vm: {tests_s:.0f} s",
            *(f"- {f}" for f in figures),
            "",
            "## Transcript",
            "",
            "```",
            *lines,
            "```",
            "",
        ]
    )


def _attach(node: str, payload: str | None) -> int:
    g = _guest(node, booting=True)
    if g.pid() is not None:
        print(f"vm: {node} has a guest already", file=sys.stderr)
        return 1
    busy = subprocess.run(
        ["ip", "netns", "pids", g.namespace], capture_output=True, text=True, check=False
    )
    if busy.returncode != 0 or busy.stdout.strip():
        why = busy.stderr.strip() or "processes run in it (its meshd?)"
        print(f"vm: {node}: {why}; a guest takes an invited node's place", file=sys.stderr)
        return 1
    if payload:
        g.directory.mkdir(parents=True, exist_ok=True)
        g.payload = g.directory / "payload.img"
        vmguest.make_payload(Path(payload), g.payload, vmguest.payload_size(Path(payload)))
    wires = wiring.take_over(g.namespace)
    g.nics, g.setup = wires.nics, wiring.guest_setup(wires)
    seconds = g.start()
    names = ", ".join(f"{p.name} ({' '.join(p.addresses) or 'no address'})" for p in wires.ports)
    print(f"vm: {node} booted in {seconds:.1f} s on {names}; console {g.console}")
    return 0

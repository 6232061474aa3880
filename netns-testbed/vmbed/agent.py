#!/usr/bin/env python3
"""vm-agent: runs the host's commands in this guest, over a virtio-serial port.

Installed into the guest image by vmbed.image (standard library only: the guest has
Debian's python3 and nothing else). The host writes one JSON line per command,
``{"id": N, "cmd": "...", "timeout": S, "input": "..."}``, and reads one JSON line back,
``{"id": N, "rc": R, "out": "...", "err": "..."}``; ``rc`` is 124 when the command ran
out of time. Commands run one at a time, as root, under ``bash -c``; one that starts a
daemon must detach it from its output (systemd-run, or redirect it), or the call waits for
the daemon. There is no network in this: the port is a character device of the guest.
"""

import json
import os
import subprocess
import time

PORT = "/dev/virtio-ports/org.meshd.agent"


def answer(request: dict) -> dict:
    try:
        proc = subprocess.run(
            ["/bin/bash", "-c", str(request["cmd"])],
            input=request.get("input") or "",
            capture_output=True,
            text=True,
            errors="replace",
            timeout=float(request.get("timeout", 60)),
            check=False,
        )
        return {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr}
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return {"rc": 124, "out": out, "err": f"vm-agent: timed out after {exc.timeout} s"}
    except (KeyError, ValueError, OSError) as exc:
        return {"rc": 125, "out": "", "err": f"vm-agent: {exc}"}


def main() -> None:
    while not os.path.exists(PORT):
        time.sleep(0.2)
    fd = os.open(PORT, os.O_RDWR)
    pending = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:  # no host on the other end yet
            time.sleep(0.2)
            continue
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            try:
                request = json.loads(line)
            except ValueError:
                continue  # a torn line from a host that went away mid-write
            reply = {"id": request.get("id"), **answer(request)}
            data = json.dumps(reply).encode() + b"\n"
            while data:
                data = data[os.write(fd, data) :]


if __name__ == "__main__":
    main()

"""One uplink health check: a TCP connection to the target through the uplink interface
only (SO_BINDTODEVICE), so that it cannot succeed through the mesh's exit route. A refused
connection also proves the path works; a timeout or an unreachable network does not."""

from __future__ import annotations

import asyncio
import errno
import socket


async def check(ifname: str, host: str, port: int, timeout_s: float) -> tuple[bool, str]:
    """(ok, what happened)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout_s)
    except TimeoutError:
        return False, f"no answer from {host}:{port} within {timeout_s:g} s"
    except ConnectionRefusedError:
        return True, "refused (reachable)"
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return False, f"no interface {ifname}"
        return False, f"{host}:{port}: {exc.strerror or exc}"
    finally:
        sock.close()
    return True, "connected"

"""Sockets made from inside a network namespace of the lab, for clients running on the host."""

from __future__ import annotations

import ctypes
import socket
import threading
from typing import Any

CLONE_NEWNET = 0x40000000


def connect_from(namespace: str | None, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection made from inside a network namespace (a peer's place on the network): a
    short-lived thread joins the namespace, and the socket stays in it."""
    if namespace is None:
        return socket.create_connection((host, port), timeout=timeout)
    outcome: dict[str, Any] = {}

    def dial() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        with open(f"/run/netns/{namespace}") as handle:  # noqa: PTH123 (a descriptor for setns)
            if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                outcome["error"] = OSError(ctypes.get_errno(), f"setns {namespace}")
                return
        try:
            outcome["socket"] = socket.create_connection((host, port), timeout=timeout)
        except OSError as error:
            outcome["error"] = error

    thread = threading.Thread(target=dial)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["socket"]

"""Sockets (and the clients that make them) inside a network namespace of the lab, for processes
running on the host."""

from __future__ import annotations

import contextlib
import ctypes
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def within(namespace: str, call: Callable[[], T]) -> T:
    """`call()` run inside a network namespace: a short-lived thread joins the namespace and runs it,
    so every socket it makes belongs there (and stays there), while the process stays where it was."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        with open(f"/run/netns/{namespace}") as handle:  # noqa: PTH123 (a descriptor for setns)
            if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                outcome["error"] = OSError(ctypes.get_errno(), f"setns {namespace}")
                return
        try:
            outcome["result"] = call()
        except Exception as error:  # raised again in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    result: T = outcome["result"]
    return result


def connect_from(namespace: str | None, host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection made from inside a network namespace (a peer's place on the network)."""
    if namespace is None:
        return socket.create_connection((host, port), timeout=timeout)
    return within(namespace, lambda: socket.create_connection((host, port), timeout=timeout))


def listener(host: str, port: int, namespace: str | None = None) -> socket.socket:
    """A listening TCP socket on `host:port`, inside a network namespace when one is named."""

    def make() -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=128)

    return make() if namespace is None else within(namespace, make)


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def relay(port: int, listen_in: str, connect_in: str | None = None) -> None:
    """Accept on 127.0.0.1:`port` in namespace `listen_in`, connect to 127.0.0.1:`port` in `connect_in`
    (the host's, when None) and copy both ways, in daemon threads of this process."""
    server = listener("127.0.0.1", port, listen_in)

    def connect() -> socket.socket:
        return socket.create_connection(("127.0.0.1", port))

    def serve() -> None:
        while True:
            inside, _ = server.accept()
            outside = connect() if connect_in is None else within(connect_in, connect)
            for source, target in ((inside, outside), (outside, inside)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()

"""The metadata service, on real packets: a VPS namespace with the shipped packet filter applied, a
"cloud" namespace answering on Hetzner's metadata addresses, and a container namespace behind a
`docker0` bridge port. Root on the VPS reaches the service; another host user and the container
are refused at once (not left hanging).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from components.host_baseline import RULE_FILES, HostSettings, render_host_baseline
from config import BaselinePolicy

POLICY = BaselinePolicy()
METADATA_V4 = POLICY.metadata.addresses_of(4)[0]
METADATA_V6 = POLICY.metadata.addresses_of(6)[0]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# Debian's interpreter: one that user nobody can run too.
PYTHON = "/usr/bin/python3"
# Prints "open", "refused" or "timeout" for a TCP connect to HOST PORT [SCOPE-INTERFACE].
CONNECT = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in host else socket.AF_INET
address = (host, port, 0, socket.if_nametoindex(sys.argv[3])) if len(sys.argv) > 3 else (host, port)
with socket.socket(family, socket.SOCK_STREAM) as s:
    s.settimeout(3)
    try:
        s.connect(address)
        print("open")
    except ConnectionRefusedError:
        print("refused")
    except TimeoutError:
        print("timeout")
"""

Namespaces = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Namespaces]:
    assert os.geteuid() == 0, "the namespace tests need root (CI runs as root)"
    names = {role: f"claw-md-{role}-{os.getpid()}" for role in ("vps", "cloud", "ctr")}
    server: subprocess.Popen[bytes] | None = None

    def run(role: str, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", names[role], *command], capture_output=True, text=True, check=check
        )

    try:
        for role, name in names.items():
            subprocess.run(["ip", "netns", "add", name], check=True)
            # Addresses usable at once: no duplicate address detection delay.
            run(role, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0", "net.ipv6.conf.all.accept_dad=0")
            run(role, "ip", "link", "set", "lo", "up")
        run("vps", "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", names["cloud"])
        run("vps", "ip", "link", "add", "docker0", "type", "veth", "peer", "name", "eth0", "netns", names["ctr"])
        for command in (
            ("vps", "ip", "addr", "add", "10.99.0.1/24", "dev", "eth0"),
            ("vps", "ip", "addr", "add", "172.30.0.1/24", "dev", "docker0"),
            ("cloud", "ip", "addr", "add", "10.99.0.2/24", "dev", "eth0"),
            ("cloud", "ip", "addr", "add", f"{METADATA_V4}/32", "dev", "eth0"),
            ("cloud", "ip", "-6", "addr", "add", f"{METADATA_V6}/64", "dev", "eth0", "nodad"),
            ("ctr", "ip", "addr", "add", "172.30.0.2/24", "dev", "eth0"),
            ("vps", "ip", "link", "set", "eth0", "up"),
            ("vps", "ip", "link", "set", "docker0", "up"),
            ("cloud", "ip", "link", "set", "eth0", "up"),
            ("ctr", "ip", "link", "set", "eth0", "up"),
            ("vps", "ip", "route", "add", f"{METADATA_V4}/32", "via", "10.99.0.2"),
            ("cloud", "ip", "route", "add", "172.30.0.0/24", "via", "10.99.0.1"),
            ("ctr", "ip", "route", "add", "default", "via", "172.30.0.1"),
            ("vps", "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"),
        ):
            run(*command)
        # The stand-in metadata service (and any other service of the "cloud"), both families.
        server = subprocess.Popen(
            ["ip", "netns", "exec", names["cloud"], PYTHON, "-m", "http.server", "80", "--bind", "::"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(50):
            if connect(run, "cloud", METADATA_V4) == "open":
                break
            time.sleep(0.1)
        else:
            pytest.fail("the stand-in metadata service did not start")
        yield run
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        for name in names.values():
            subprocess.run(["ip", "netns", "delete", name], check=False)


def connect(run: Namespaces, role: str, host: str, *, user: list[str] | None = None, scope: str = "") -> str:
    command = [*(user or []), PYTHON, "-c", CONNECT, host, "80", *([scope] if scope else [])]
    return run(role, *command).stdout.strip()


def reachability(run: Namespaces) -> dict[str, str]:
    return {
        "root": connect(run, "vps", METADATA_V4),
        "root v6": connect(run, "vps", METADATA_V6, scope="eth0"),
        "nobody": connect(run, "vps", METADATA_V4, user=NOBODY),
        "nobody v6": connect(run, "vps", METADATA_V6, user=NOBODY, scope="eth0"),
        "container": connect(run, "ctr", METADATA_V4),
        "container elsewhere": connect(run, "ctr", "10.99.0.2"),
    }


def test_only_root_on_the_host_reaches_the_metadata_service(world: Namespaces, tmp_path: Path) -> None:
    # Without the baseline everyone reaches it: the setup itself cannot hide a failure.
    assert set(reachability(world).values()) == {"open"}

    bundle = render_host_baseline(POLICY, HostSettings())
    bundle.write_to(tmp_path)
    assert METADATA_V4 in bundle.file(RULE_FILES[4]).content
    world("vps", "sh", str(tmp_path / "apply.sh"), "--firewall-only")

    assert reachability(world) == {
        "root": "open",
        "root v6": "open",
        "nobody": "refused",
        "nobody v6": "refused",
        "container": "refused",
        # The container's other egress still works.
        "container elsewhere": "open",
    }

"""The lab: a customer VPS that is a booted Debian 12 machine, deployed by the program's own remote
commands, on an emulated internet, all inside network namespaces on this machine.

    internet (router namespace): resolver, Debian mirror, image registry, sinks on SMTP/IRC/443
    vps namespace: the booted machine (systemd-nspawn), as Hetzner hands over a new debian-12 server
    client, attacker, provisioner namespaces: the rest of the world

`Lab.up()` builds the world, creates the server from the program's `user_data` and provisioning
key, and runs the stack's remote commands against it as pulumi-command would (`lab.deploy`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.gateway import GATEWAY_USER
from components.host_baseline import BUNDLE_DIR
from components.offline import Registration
from config import BaselinePolicy
from config.customer import CustomerConfig, PlatformConfig
from config.loader import StackSettings
from lab import servers, topology
from lab.deploy import Stack
from lab.machine import Image, Machine, NoCloudSeed, ensure_image
from lab.replay import Runner, Step
from lab.topology import PEERS, PROVISIONER, ROUTER, VPS, VPS_PEER, Peer

STATE_DIR = Path("/run/clawhosters-lab")
DATA_DIR = Path("/var/lib/clawhosters-lab")
NF_LOG_ALL_NETNS = Path("/proc/sys/net/netfilter/nf_log_all_netns")
REPO = Path(__file__).resolve().parent.parent
CUSTOMER_ID = "lab"
GATEWAY_VERSIONS = ("1.0", "1.1")
# Daemons of the emulated internet, stopped by their recorded PIDs.
SERVICES = ("sink", "dns", "mirror", "registry")


class LabError(RuntimeError):
    pass


def run(
    command: Sequence[str], *, check: bool = True, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, input=stdin, check=False)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def in_ns(namespace: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", namespace, *command]


def wait_until(what: str, probe: Callable[[], object], timeout: float = 30, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(interval)
    raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Lab:
    """One emulated instance. `up()` builds and deploys it, `down()` removes everything it started."""

    state_dir: Path = STATE_DIR
    policy: BaselinePolicy = field(default_factory=BaselinePolicy)
    pids: dict[str, int] = field(default_factory=dict)
    image_digests: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stack = Stack(VPS_PEER.ipv4, VPS_PEER.ipv6)
        self.runner = Runner(PROVISIONER.namespace)
        self.image: Image | None = None
        self.machine: Machine | None = None
        self.settings: StackSettings | None = None
        self.first_steps: list[Step] = []

    # -- the customer's instance -------------------------------------------------------------------
    def gateway_image(self, version: str = GATEWAY_VERSIONS[0]) -> str:
        repository = f"{topology.REGISTRY_NAME}/{topology.GATEWAY_REPOSITORY}"
        return f"{repository}:{version}@{self.image_digests[version]}"

    def default_settings(self) -> StackSettings:
        return StackSettings(
            customer=CustomerConfig(customer_id=CUSTOMER_ID, gateway_image=self.gateway_image()),
            platform=PlatformConfig(provisioner_cidrs=topology.PROVISIONER_CIDRS),
        )

    def deploy(self, settings: StackSettings | None = None, policy: BaselinePolicy | None = None) -> list[Step]:
        """`pulumi up` with these settings (default: the lab's customer); the steps it ran."""
        self.settings = settings or self.settings or self.default_settings()
        if policy is not None:
            self.policy = policy
        return self.stack.up(self.settings, self.runner, self._create_server, self.policy)

    def _create_server(self, server: Registration) -> None:
        """What Hetzner does for `hcloud.Server`: a new machine from the image, seeded with the
        server's user_data and the provisioning key, booted."""
        assert self.image is not None
        provisioning = self.stack.values[server.name.removesuffix("-server") + "-provisioning-key"]
        self.machine = Machine(self.image, DATA_DIR / "machines" / VPS, VPS)
        self.machine.create(
            NoCloudSeed(
                instance_id=f"i-{server.name}",
                hostname=server.inputs["name"],
                public_keys=(provisioning["publicKeyOpenssh"].strip(),),
                user_data=server.inputs["userData"],
            )
        )
        # Like a new Hetzner server: the API returns while it boots; the commands' dial retries
        # and the wait for cloud-init do the rest.
        self.machine.boot(until_booted=False)
        self.pids["machine"] = self.machine.process.pid if self.machine.process else 0
        self._save()

    @property
    def password(self) -> str:
        return str(self.stack.outputs["gateway_password"])

    @property
    def provisioning_key(self) -> Path:
        """The provisioning private key, as a file for OpenSSH's client."""
        path = self.state_dir / "provisioning_key"
        if not path.exists():
            name = next(name for name in self.stack.values if name.endswith("-provisioning-key"))
            path.touch(mode=0o600)
            path.write_text(self.stack.values[name]["privateKeyOpenssh"])
        return path

    # -- commands ----------------------------------------------------------------------------------
    def vps(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command in the VPS's network namespace, with this machine's tools."""
        return run(in_ns(VPS, *command), check=check, timeout=timeout)

    def host(
        self, *command: str, check: bool = True, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command inside the booted machine, as root."""
        assert self.machine is not None
        result = self.machine.run(*command, check=False, timeout=timeout, stdin=stdin)
        if check and result.returncode != 0:
            raise LabError(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def host_process(self, *command: str) -> subprocess.Popen[str]:
        assert self.machine is not None
        return self.machine.popen(*command)

    def docker(self, *arguments: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.host("docker", *arguments, check=check, timeout=timeout)

    def fail2ban(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.host("fail2ban-client", *arguments, check=check, timeout=30)

    def journal(self, *arguments: str) -> str:
        assert self.machine is not None
        return self.machine.journal(*arguments)

    def ruleset(self) -> str:
        """The VPS's filter and nat tables, both families, without counters or timestamps."""
        dumps = [
            self.vps(f"{tool}-save", "-t", table).stdout
            for tool in ("iptables", "ip6tables")
            for table in ("filter", "nat")
        ]
        text = "".join(line + "\n" for dump in dumps for line in dump.splitlines() if not line.startswith("#"))
        return re.sub(r" \[\d+:\d+\]$", "", text, flags=re.MULTILINE)

    def apply_firewall(self) -> None:
        """How an operator re-asserts the firewall: the installed bundle's apply.sh."""
        self.host("sh", f"{BUNDLE_DIR}/apply.sh", "--firewall-only")

    def reboot(self) -> None:
        """Power the machine off and boot it again; wait until the gateway serves."""
        assert self.machine is not None
        self.machine.poweroff()
        self.machine.boot()
        self.pids["machine"] = self.machine.process.pid if self.machine.process else 0
        self._save()
        self.wait_for_gateway()

    def wait_for_gateway(self, timeout: float = 90) -> None:
        port = self.policy.inbound.gateway_port
        wait_until("the gateway", lambda: self.http_status("127.0.0.1", port) == 401, timeout=timeout)

    def _spawn(self, name: str, command: Sequence[str], log: Path) -> None:
        """Start a daemon in its own process group and record its PID for `down`."""
        with log.open("ab") as output:
            process = subprocess.Popen(
                list(command),
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO,
            )
        self.pids[name] = process.pid
        self._save()

    def _save(self) -> None:
        (self.state_dir / "state.json").write_text(json.dumps({"pids": self.pids}))

    # -- building ----------------------------------------------------------------------------------
    def up(self, deploy: bool = True) -> list[Step]:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, iptables, systemd-nspawn)")
        down(self.state_dir)
        self.state_dir.mkdir(mode=0o755, parents=True)
        (self.state_dir / "nf_log_all_netns").write_text(NF_LOG_ALL_NETNS.read_text())
        # Kernel LOG lines from a namespace other than the host's are dropped unless this is set.
        NF_LOG_ALL_NETNS.write_text("1\n")
        self.image = ensure_image()
        self._network()
        self._internet()
        return self.deploy() if deploy else []

    def _network(self) -> None:
        for namespace in topology.NAMESPACES:
            run(["ip", "netns", "add", namespace])
            run(in_ns(namespace, "ip", "link", "set", "lo", "up"))
        for command in (
            ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
            ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
            ["ip", "addr", "add", f"{topology.SINK_V4}/32", "dev", "lo"],
            ["ip", "-6", "addr", "add", f"{topology.SINK_V6}/128", "dev", "lo"],
            *(
                ["ip", "addr", "add", f"{address}/32", "dev", "lo"]
                for address in (topology.DNS_V4, topology.MIRROR_V4, topology.REGISTRY_V4)
            ),
        ):
            run(in_ns(ROUTER, *command))
        for peer in PEERS:
            self._link(peer)

    @staticmethod
    def _link(peer: Peer) -> None:
        inside, outside = f"cl-{peer.link}", f"cl-{peer.link}-r"
        run(["ip", "link", "add", inside, "type", "veth", "peer", "name", outside])
        run(["ip", "link", "set", inside, "netns", peer.namespace])
        run(["ip", "link", "set", outside, "netns", ROUTER])
        for command in (
            ["ip", "link", "set", inside, "name", "eth0"],
            ["ip", "addr", "add", peer.cidr4, "dev", "eth0"],
            ["ip", "-6", "addr", "add", f"{peer.ipv6}/{peer.prefix6}", "dev", "eth0", "nodad"],
            ["ip", "link", "set", "eth0", "up"],
            ["ip", "route", "add", "default", "via", peer.router_ipv4],
            ["ip", "-6", "route", "add", "default", "via", peer.router_ipv6],
        ):
            run(in_ns(peer.namespace, *command))
        for command in (
            ["ip", "addr", "add", f"{peer.router_ipv4}/{peer.prefix4}", "dev", outside],
            ["ip", "-6", "addr", "add", f"{peer.router_ipv6}/{peer.prefix6}", "dev", outside, "nodad"],
            ["ip", "link", "set", outside, "up"],
        ):
            run(in_ns(ROUTER, *command))

    def _internet(self) -> None:
        """The sinks, the resolver, the Debian mirror and the image registry, with the gateway's
        releases pushed to it."""
        assert self.image is not None
        addresses = (topology.SINK_V4, topology.SINK_V6)
        sink = in_ns(ROUTER, sys.executable, "-m", "lab.sink", *addresses, "--ports", *map(str, topology.SINK_PORTS))
        self._spawn("sink", sink, self.state_dir / "sink.log")
        dns = [
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--pid-file=",
            "--bind-interfaces",
            f"--listen-address={topology.DNS_V4}",
            f"--address=/{topology.ARCHIVE_NAME}/{topology.MIRROR_V4}",
            f"--address=/{topology.REGISTRY_NAME}/{topology.REGISTRY_V4}",
            # Every other name: an immediate NXDOMAIN, as for a name that does not exist.
            "--address=/#/",
        ]
        self._spawn("dns", in_ns(ROUTER, *dns), self.state_dir / "dns.log")
        mirror = [sys.executable, "-m", "http.server", "80", "--bind", topology.MIRROR_V4, "--directory"]
        self._spawn("mirror", in_ns(ROUTER, *mirror, str(self.image.mirror)), self.state_dir / "mirror.log")
        config = self.state_dir / "registry.yml"
        storage = self.state_dir / "registry"
        config.write_text(
            json.dumps(
                {
                    "version": 0.1,
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(storage)}},
                    "http": {
                        "addr": f"{topology.REGISTRY_V4}:443",
                        "tls": {
                            "certificate": str(self.image.registry_certificate),
                            "key": str(self.image.registry_key),
                        },
                    },
                }
            )
        )
        self._spawn("registry", in_ns(ROUTER, "docker-registry", "serve", str(config)), self.state_dir / "registry.log")
        for name, port, address in (
            ("the sinks", 443, topology.SINK_V4),
            ("the resolver", 53, topology.DNS_V4),
            ("the mirror", 80, topology.MIRROR_V4),
            ("the registry", 443, topology.REGISTRY_V4),
        ):
            wait_until(name, lambda port=port, address=address: _listening(ROUTER, port, address), timeout=30)
        pushed = run(
            in_ns(
                ROUTER,
                sys.executable,
                "-m",
                "lab.image",
                "push",
                f"https://{topology.REGISTRY_V4}",
                topology.GATEWAY_REPOSITORY,
                *GATEWAY_VERSIONS,
                "--ca",
                str(self.image.ca_certificate),
                "--server-name",
                topology.REGISTRY_NAME,
            ),
            timeout=120,
        )
        self.image_digests = json.loads(pushed.stdout)

    def http_status(self, host: str, port: int, namespace: str = VPS, auth: bool = False, path: str = "/") -> int:
        """The HTTP status the gateway answers with, or 0 when nothing answers in 3 s."""
        return int(self.http_get(host, port, namespace, auth, path)[0])

    def http_get(
        self, host: str, port: int, namespace: str = VPS, auth: bool = False, path: str = "/"
    ) -> tuple[int, str]:
        target = f"[{host}]" if ":" in host else host
        command = ["curl", "-s", "-w", "\n%{http_code}", "--max-time", "3"]
        if auth:
            command += ["-u", f"{GATEWAY_USER}:{self.password}"]
        result = run(in_ns(namespace, *command, f"http://{target}:{port}{path}"), check=False, timeout=10)
        body, _, status = result.stdout.rpartition("\n")
        return int(status or 0), body


def _listening(namespace: str, port: int, address: str | None = None) -> bool:
    where = f"sport = :{port}" if address is None else f"src {address} and sport = :{port}"
    sockets = run(in_ns(namespace, "ss", "-Hln", where), check=False).stdout
    return bool(sockets.strip())


def _stop(pid: int | None, timeout: float = 20) -> None:
    """End a process group we started, politely first."""
    if pid is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
            time.sleep(0.1)


def down(state_dir: Path = STATE_DIR) -> None:
    """Remove a lab: the machine, the daemons (by the PIDs it recorded), namespaces, sysctl, files,
    and the emulated cloud's servers on its network."""
    servers.down()
    state = state_dir / "state.json"
    if state.exists():
        pids: dict[str, Any] = json.loads(state.read_text())["pids"]
        machine = pids.get("machine")
        if machine:
            # SIGTERM asks nspawn to shut the machine down cleanly; SIGKILL after the grace time.
            _stop(machine, timeout=60)
        for name in SERVICES:
            _stop(pids.get(name))
    Machine(None, DATA_DIR / "machines" / VPS, VPS).release_cgroups()
    shutil.rmtree(DATA_DIR / "machines" / VPS, ignore_errors=True)
    for namespace in topology.NAMESPACES:
        if Path(f"/run/netns/{namespace}").exists():
            run(["ip", "netns", "delete", namespace], check=False)
    saved = state_dir / "nf_log_all_netns"
    if saved.exists():
        NF_LOG_ALL_NETNS.write_text(saved.read_text())
    if state_dir.exists():
        shutil.rmtree(state_dir, ignore_errors=True)

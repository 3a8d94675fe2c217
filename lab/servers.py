"""The emulated Hetzner Cloud's servers as booted machines: `ServerBackend`, a `MachineBackend`.

Every server of the API emulation (lab/hcloud_api) gets
- a network namespace of its own, `claw-lab-s<id>`, joined to the lab's router (`claw-lab-net`) by
  a veth pair and wired the way Hetzner wires a server: its eth0 has the server's MAC, the router
  routes the server's public IPv4 address (a /32) and its IPv6 /64 to that link and is the on-link
  gateway of both (`topology.CLOUD_GATEWAY_V4`, fe80::1); a DHCP server on the router (dnsmasq, one
  host entry per MAC) hands out the IPv4 address, and Hetzner's metadata service answers at
  169.254.169.254 (`lab.metadata`);
- a disk: a copy of the lab's Debian 12 image for `debian-12`, or of a snapshot this backend took;
- firmware: an SMBIOS table naming Hetzner as the manufacturer and the server id as the serial
  number (`lab.smbios`), which is how cloud-init's Hetzner datasource knows where it runs;
- a systemd-nspawn machine booted from that disk inside the namespace, presented to the OS as a
  virtual machine rather than a container (`ServerMachine`): the datasource reads no firmware in a
  container, and Hetzner's servers are virtual machines;
- its cloud firewalls, enforced on the router for its link (`lab.cloud_firewall`).

Nothing seeds the disk: cloud-init finds the server's user data, SSH keys, hostname and network
configuration where it finds them at Hetzner. Every process is started and stopped by its recorded
PID; everything lives under one directory, and `down()` removes the machines, namespaces, links,
processes and files. Each method may run again after an emulator restart: it checks what is
already done.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from config.hetzner import HETZNER
from lab import cloud_firewall, smbios, topology
from lab.hcloud_api import catalog
from lab.hcloud_api.backend import MachineError, MachineSpec, ServerFirewall
from lab.machine import Image, Machine, ensure_image
from lab.machine import MachineError as BootError
from lab.metadata import ServerMetadata, write_record

CLOUD_DIR = Path("/var/lib/clawhosters-lab/cloud")
REPO = Path(__file__).resolve().parent.parent
SYSTEM_IMAGE = "debian-12"
SHUTDOWN_SECONDS = 90
KILL_SECONDS = 30
SERVICE_START_SECONDS = 20
FREEZE_SECONDS = 30
# What Hetzner's hypervisor tells the guest about the machine (besides the serial, the server id).
MANUFACTURER = "Hetzner"
PRODUCT = "vServer"


class Hardware(BaseModel):
    """The server type a machine was given last (at creation or by a resize)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    server_type: str
    cores: int
    memory_gb: float
    disk_gb: int


def namespace(server_id: int) -> str:
    return f"{topology.SERVER_NAMESPACE_PREFIX}{server_id}"


def mac_address(server_id: int) -> str:
    """A locally administered unicast MAC from the server id, in Hetzner's 96:00 range."""
    if not 0 < server_id < 2**32:
        raise MachineError(f"server id {server_id} does not fit a MAC address")
    return ":".join(f"{byte:02x}" for byte in (0x96, 0x00, *server_id.to_bytes(4, "big")))


def _run(command: list[str], timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise MachineError(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()[-1000:]}")
    return result


def _router(*arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run(["ip", "-n", topology.ROUTER, *arguments], check=check)


def router_is_up() -> bool:
    return Path(f"/run/netns/{topology.ROUTER}").exists()


def _alive(pid: int, marker: str) -> bool:
    """Whether `pid` still runs the process started with `marker` among its arguments."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    return marker.encode() in arguments


def _stop(pid: int, marker: str, timeout: float = 10) -> None:
    """End a process this backend started, by its PID: politely, then for good."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _alive(pid, marker):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid, marker):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)


class ServerMachine(Machine):
    """A server's machine. To the OS it is a virtual machine, as at Hetzner, not a container:
    - PID 1 starts without `$container` and /run/host/container-manager is empty, so systemd (and
      cloud-init, which asks `systemd-detect-virt --container` and PID 1's environment) find no
      container manager;
    - it has no cgroup namespace, which systemd would also take for a container;
    - its firmware's SMBIOS table is where dmidecode reads it, /dev/mem."""

    def __init__(self, directory: Path, name: str, empty: Path) -> None:
        super().__init__(directory, name)  # its disk is copied by the backend
        self.empty = empty

    @property
    def firmware(self) -> Path:
        return self.directory / "smbios"

    def nspawn_arguments(self) -> list[str]:
        # Not `--boot`: PID 1 is systemd without the environment nspawn would give it.
        return [
            *(argument for argument in super().nspawn_arguments() if argument != "--boot"),
            # What a power button does: systemd goes to poweroff.target (nspawn sends it on SIGTERM).
            "--kill-signal=SIGRTMIN+4",
            f"--bind-ro={self.firmware}:/dev/mem",
            f"--bind-ro={self.empty}:/run/host/container-manager",
            "/usr/bin/env",
            "-u",
            "container",
            "/sbin/init",
        ]

    def nspawn_environment(self) -> dict[str, str]:
        # A cgroup namespace is what systemd takes for a container when nothing else says so.
        return super().nspawn_environment() | {"SYSTEMD_NSPAWN_USE_CGNS": "0"}

    def signal(self, sig: int) -> None:
        leader = self._leader()
        if leader is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(leader, sig)

    def wait_off(self, timeout: float) -> bool:
        """Whether nspawn has exited within `timeout` seconds (reaped when it is our child)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                return True
            time.sleep(0.2)
        return not self.running

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Every process of the machine held where it is (the cgroup v2 freezer) while the block
        runs, so its disk holds still: what a copy reads meanwhile is the disk at one moment, as a
        power cut would leave it (what the kernel has not written yet, it already shows to readers).
        A machine that is off holds still anyway."""
        if not self.running:
            yield
            return
        unified = [cgroup for cgroup in self.cgroups() if (cgroup / "cgroup.freeze").exists()]
        if not unified:
            raise MachineError(f"machine {self.namespace} has no cgroup v2 freezer")
        cgroup = unified[0]
        (cgroup / "cgroup.freeze").write_text("1")
        try:
            deadline = time.monotonic() + FREEZE_SECONDS
            while "frozen 1" not in (cgroup / "cgroup.events").read_text().splitlines():
                if time.monotonic() > deadline:
                    raise MachineError(f"machine {self.namespace} did not freeze within {FREEZE_SECONDS} s")
                time.sleep(0.05)
            yield
        finally:
            (cgroup / "cgroup.freeze").write_text("0")

    def kill(self) -> None:
        """Cut the power: SIGKILL to PID 1 ends every process of the machine at once."""
        if not self.running:
            return
        self.signal(signal.SIGKILL)
        if not self.wait_off(KILL_SECONDS) and (pid := self.pid) is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            self.wait_off(KILL_SECONDS)
        if self.running:
            raise MachineError(f"machine {self.namespace} did not stop")


class ServerBackend:
    """Booted machines for the emulator's servers, on the lab's network. `start()` first (the
    lab's internet must be up: `lab.world.Lab().internet()`); `close()` stops the DHCP and
    metadata services and leaves the machines to a later `start()` or to `down()`."""

    def __init__(self, directory: Path = CLOUD_DIR) -> None:
        self.directory = directory
        self.image: Image | None = None
        self._machines: dict[int, ServerMachine] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._lock = threading.Lock()

    # --- paths ------------------------------------------------------------------------------

    @property
    def servers(self) -> Path:
        return self.directory / "servers"

    @property
    def images(self) -> Path:
        return self.directory / "images"

    @property
    def _services_file(self) -> Path:
        return self.directory / "services.json"

    @property
    def _dhcp_hosts(self) -> Path:
        return self.directory / "dhcp-hosts"

    def machine(self, server_id: int) -> ServerMachine:
        """The machine of a server (it may be off)."""
        with self._lock:
            found = self._machines.get(server_id)
            if found is None:
                found = ServerMachine(self.servers / str(server_id), namespace(server_id), self.directory / "empty")
                self._machines[server_id] = found
            return found

    def hardware(self, server_id: int) -> Hardware:
        return Hardware.model_validate_json((self.servers / str(server_id) / "hardware.json").read_text())

    # --- services ---------------------------------------------------------------------------

    def start(self) -> None:
        """Build (or find) the image and start the DHCP server and the metadata service."""
        if os.geteuid() != 0:
            raise MachineError("the servers need root (network namespaces, systemd-nspawn)")
        if not router_is_up():
            raise MachineError(f"the lab's internet is not up (no namespace {topology.ROUTER})")
        self.image = ensure_image()
        for directory in (self.servers, self.images):
            directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "empty").touch()
        self._write_dhcp_hosts()
        # The metadata address is the router's own, reachable from every server link.
        address = _router("addr", "add", f"{topology.METADATA_V4}/32", "dev", "lo", check=False)
        if address.returncode != 0 and "already assigned" not in address.stderr:
            raise MachineError(f"cannot add {topology.METADATA_V4} to the router: {address.stderr.strip()}")
        services = self._services()
        for name, command in (("dhcp", self._dhcp_command()), ("metadata", self._metadata_command())):
            pid = services.get(name)
            if pid is None or not _alive(pid, _service_marker(self.directory, name)):
                services[name] = self._spawn(name, command)
                self._services_file.write_text(json.dumps(services))
        self._wait_listening(67, "udp")
        self._wait_listening(80, "tcp")

    def close(self) -> None:
        """Stop the DHCP server and the metadata service; the machines keep running."""
        _stop_services(self.directory)

    def _services(self) -> dict[str, int]:
        if not self._services_file.exists():
            return {}
        services: dict[str, int] = json.loads(self._services_file.read_text())
        return services

    def _spawn(self, name: str, command: list[str]) -> int:
        with (self.directory / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                ["ip", "netns", "exec", topology.ROUTER, *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=REPO,
            )
        return process.pid

    def _dhcp_command(self) -> list[str]:
        gateway = topology.CLOUD_GATEWAY_V4
        network = ipaddress.IPv4Network(topology.CLOUD_DHCP_NETWORK)
        return [
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--pid-file=",
            "--port=0",
            "--log-dhcp",
            "--log-facility=-",
            "--interface=cs*",
            # Hetzner's answer: the address as a /32, the gateway reached on the link (RFC 3442).
            f"--dhcp-range={network.network_address},static,{network.netmask},1d",
            "--dhcp-authoritative",
            "--dhcp-option=option:netmask,255.255.255.255",
            f"--dhcp-option=option:router,{gateway}",
            f"--dhcp-option=option:classless-static-route,{gateway}/32,0.0.0.0,0.0.0.0/0,{gateway}",
            f"--dhcp-option=option:dns-server,{topology.DNS_V4}",
            f"--dhcp-leasefile={self.directory / 'dhcp.leases'}",
            _service_marker(self.directory, "dhcp"),
        ]

    def _metadata_command(self) -> list[str]:
        listen = f"{topology.METADATA_V4}:80"
        return [sys.executable, "-m", "lab.metadata", "--listen", listen, _service_marker(self.directory, "metadata")]

    def _wait_listening(self, port: int, protocol: str) -> None:
        flag = "-Hlun" if protocol == "udp" else "-Hltn"
        deadline = time.monotonic() + SERVICE_START_SECONDS
        while time.monotonic() < deadline:
            sockets = _run(["ip", "netns", "exec", topology.ROUTER, "ss", flag, f"sport = :{port}"], check=False)
            if sockets.stdout.strip():
                return
            time.sleep(0.2)
        raise MachineError(f"nothing listens on {protocol}/{port} in {topology.ROUTER}: see {self.directory}")

    def _write_dhcp_hosts(self) -> None:
        """One host entry per server with an IPv4 address; dnsmasq rereads the file on SIGHUP."""
        with self._lock:
            lines = []
            for path in sorted(self.servers.glob("*/metadata.json")):
                record = ServerMetadata.model_validate_json(path.read_text())
                if record.public_ipv4 is not None:
                    lines.append(f"{record.mac_address},{record.public_ipv4}\n")
            staged = self._dhcp_hosts.with_suffix(".new")
            staged.write_text("".join(lines))
            staged.replace(self._dhcp_hosts)
            pid = self._services().get("dhcp")
            if pid is not None and _alive(pid, _service_marker(self.directory, "dhcp")):
                os.kill(pid, signal.SIGHUP)

    def _release_lease(self, ipv4: str) -> None:
        """Forget a deleted server's DHCP lease, so that its address serves the next server: dnsmasq
        does not hand a configured address to a MAC while another MAC's lease holds it, and it reads
        its lease file only when it starts."""
        with self._lock:
            services = self._services()
            pid = services.get("dhcp")
            if pid is None:
                return
            _stop(pid, _service_marker(self.directory, "dhcp"))
            leases = self.directory / "dhcp.leases"
            if leases.exists():
                kept = [line for line in leases.read_text().splitlines(keepends=True) if line.split()[2:3] != [ipv4]]
                leases.write_text("".join(kept))
            services["dhcp"] = self._spawn("dhcp", self._dhcp_command())
            self._services_file.write_text(json.dumps(services))
        self._wait_listening(67, "udp")

    # --- the MachineBackend hooks -----------------------------------------------------------

    @contextlib.contextmanager
    def _server(self, spec: MachineSpec) -> Iterator[ServerMachine]:
        """One server's machine, its hooks one at a time; failures become the action's error."""
        with self._lock:
            lock = self._locks.setdefault(spec.server_id, threading.Lock())
        with lock:
            try:
                yield self.machine(spec.server_id)
            except (BootError, OSError, subprocess.TimeoutExpired) as error:
                raise MachineError(str(error)) from error

    def create(self, machine: MachineSpec) -> None:
        self._check(machine)
        with self._server(machine) as server:
            server.directory.mkdir(parents=True, exist_ok=True)
            self._record(machine, server)
            if not (server.directory / "disk").exists():
                self._copy_disk(machine.image_id, server)
            _run(["ip", "netns", "add", server.namespace], check=False)
            if not Path(f"/run/netns/{server.namespace}").exists():
                raise MachineError(f"cannot create namespace {server.namespace}")

    def power_on(self, machine: MachineSpec) -> None:
        with self._server(machine) as server:
            self._record(machine, server)
            self._boot(machine, server)

    def power_off(self, machine: MachineSpec) -> None:
        with self._server(machine) as server:
            server.kill()
            self._off(machine, server)

    def shutdown(self, machine: MachineSpec) -> None:
        with self._server(machine) as server:
            if server.running:
                # ACPI's power button at Hetzner; systemd's own signal for it here.
                server.signal(signal.SIGRTMIN + 4)
                if not server.wait_off(SHUTDOWN_SECONDS):
                    raise MachineError(f"server {machine.name} did not shut down within {SHUTDOWN_SECONDS} s")
            self._off(machine, server)

    def reboot(self, machine: MachineSpec) -> None:
        with self._server(machine) as server:
            if server.running:
                # ctrl-alt-del: systemd reboots; nspawn exits and the next boot starts here.
                server.signal(signal.SIGRTMIN + 5)
                if not server.wait_off(SHUTDOWN_SECONDS):
                    raise MachineError(f"server {machine.name} did not reboot within {SHUTDOWN_SECONDS} s")
            self._off(machine, server)
            self._record(machine, server)
            self._boot(machine, server)

    def reset(self, machine: MachineSpec) -> None:
        with self._server(machine) as server:
            server.kill()
            self._off(machine, server)
            self._record(machine, server)
            self._boot(machine, server)

    def resize(self, machine: MachineSpec) -> None:
        # A machine shares the host's processors and memory; what changes is what it was sold as.
        with self._server(machine) as server:
            if server.running:
                raise MachineError(f"server {machine.name} is running")
            self._record(machine, server)

    def rebuild(self, machine: MachineSpec) -> None:
        self._check(machine)
        with self._server(machine) as server:
            if server.running:
                raise MachineError(f"server {machine.name} is running")
            self._record(machine, server)
            (server.directory / "disk").unlink(missing_ok=True)
            self._copy_disk(machine.image_id, server)

    def snapshot(self, machine: MachineSpec, image_id: int) -> float:
        """A snapshot or a backup: a copy of the disk, taken with the machine frozen when it runs
        (Hetzner asks a running server's guest agent to flush; here nothing can write meanwhile)."""
        with self._server(machine) as server:
            target = self.images / str(image_id)
            if not (target / "complete").exists():
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                with server.frozen():
                    _run(["cp", "-a", "--reflink=auto", str(server.rootfs), str(target / "rootfs")], timeout=600)
                (target / "complete").touch()
            size = int(_run(["du", "-s", "--block-size=1", str(target / "rootfs")], timeout=300).stdout.split()[0])
            return round(size / 1024**3, 2)

    def delete_image(self, image_id: int) -> None:
        # Not "complete" first: a half-removed copy is never taken for a disk.
        target = self.images / str(image_id)
        (target / "complete").unlink(missing_ok=True)
        shutil.rmtree(target, ignore_errors=True)

    def delete(self, machine: MachineSpec) -> None:
        with self._server(machine) as server:
            _remove_server(server)
            self._write_dhcp_hosts()
            if machine.ipv4 is not None:
                self._release_lease(machine.ipv4)
        with self._lock:
            self._machines.pop(machine.server_id, None)

    def apply_firewall(self, server_id: int, firewall: ServerFirewall) -> None:
        # On the router, whether the machine runs or not: its link is matched by name when it comes up.
        if not router_is_up():
            # No router, no table: nothing filters the server, which is right only when nothing should.
            if firewall.firewall_ids:
                raise MachineError(f"the lab's internet is not up (no namespace {topology.ROUTER})")
            return
        cloud_firewall.apply(_link(server_id), firewall)

    # --- the pieces -------------------------------------------------------------------------

    @staticmethod
    def _check(machine: MachineSpec) -> None:
        if machine.architecture != "x86":
            raise MachineError(f"{machine.server_type} is an {machine.architecture} server; this host runs x86 only")
        if machine.ipv4 is not None and ipaddress.IPv4Address(machine.ipv4) not in ipaddress.IPv4Network(
            topology.CLOUD_POOL_V4
        ):
            raise MachineError(f"{machine.ipv4} is outside the lab's server pool {topology.CLOUD_POOL_V4}")
        if machine.ipv6_network is not None and not ipaddress.IPv6Network(machine.ipv6_network).subnet_of(
            ipaddress.IPv6Network(topology.CLOUD_POOL_V6)
        ):
            raise MachineError(f"{machine.ipv6_network} is outside the lab's server pool {topology.CLOUD_POOL_V6}")

    def _record(self, machine: MachineSpec, server: ServerMachine) -> None:
        """What the metadata service, the DHCP server and the firmware say about the server."""
        location = HETZNER.location(machine.location)
        if location is None:
            raise MachineError(f"unknown location {machine.location}")
        record = ServerMetadata(
            instance_id=machine.server_id,
            hostname=machine.name,
            mac_address=mac_address(machine.server_id),
            public_ipv4=machine.ipv4,
            ipv6_network=machine.ipv6_network,
            public_keys=machine.ssh_public_keys,
            user_data=machine.user_data,
            availability_zone=catalog.AVAILABILITY_ZONES[location.name],
            region=location.network_zone,
            nameservers=(topology.DNS_V4,),
        )
        write_record(server.directory, record)
        hardware = Hardware(
            server_type=machine.server_type, cores=machine.cores, memory_gb=machine.memory_gb, disk_gb=machine.disk_gb
        )
        (server.directory / "hardware.json").write_text(hardware.model_dump_json() + "\n")
        system = smbios.SystemInformation(
            manufacturer=MANUFACTURER,
            product_name=PRODUCT,
            serial_number=str(machine.server_id),
            uuid=uuid.uuid5(uuid.NAMESPACE_URL, f"hcloud:server:{machine.server_id}"),
        )
        server.firmware.write_bytes(smbios.memory_image(system))
        server.firmware.chmod(0o400)
        self._write_dhcp_hosts()

    def _copy_disk(self, image_id: int | None, server: ServerMachine) -> None:
        """The server's disk from its image, staged so that a half copy is never booted."""
        source = self._image_rootfs(image_id)
        staged = server.directory / "rootfs.new"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.rmtree(server.rootfs, ignore_errors=True)
        _run(["cp", "-a", "--reflink=auto", str(source), str(staged)], timeout=600)
        staged.rename(server.rootfs)
        (server.directory / "disk").write_text(f"{image_id}\n")

    def _image_rootfs(self, image_id: int | None) -> Path:
        assert self.image is not None
        system = catalog.system_image_by_id(image_id) if image_id is not None else None
        if system is not None:
            if system.name != SYSTEM_IMAGE:
                raise MachineError(f"image {system.name} is not built in the lab, only {SYSTEM_IMAGE}")
            return self.image.rootfs
        snapshot = self.images / str(image_id)
        if not (snapshot / "complete").exists():
            raise MachineError(f"image {image_id} has no disk in {self.images}")
        return snapshot / "rootfs"

    def _boot(self, machine: MachineSpec, server: ServerMachine) -> None:
        if server.running:
            return
        if not (server.directory / "disk").exists():
            raise MachineError(f"server {machine.name} has no disk")
        _plug(machine, server.namespace)
        server.boot(until_booted=False)

    @staticmethod
    def _off(machine: MachineSpec, server: ServerMachine) -> None:
        """Once the machine is off: its link goes (a new boot gets a fresh NIC), so do its cgroups."""
        _unplug(machine.server_id)
        server.release_cgroups()


def _link(server_id: int) -> str:
    """The router's end of a server's link."""
    return f"cs{server_id}"


def _plug(machine: MachineSpec, name: str) -> None:
    """The server's NIC: eth0 with its MAC in its namespace, the other end on the router, which
    routes the server's addresses to it and is its gateway."""
    link = _link(machine.server_id)
    _unplug(machine.server_id)
    _run(["ip", "netns", "exec", name, "ip", "link", "del", "eth0"], check=False)
    _run(
        [
            "ip",
            "link",
            "add",
            "eth0",
            "netns",
            name,
            "address",
            mac_address(machine.server_id),
            "type",
            "veth",
            "peer",
            "name",
            link,
            "netns",
            topology.ROUTER,
        ]
    )
    _router("addr", "add", f"{topology.CLOUD_GATEWAY_V4}/32", "dev", link)
    _router("-6", "addr", "add", f"{topology.CLOUD_GATEWAY_V6}/64", "dev", link, "nodad")
    _router("link", "set", link, "up")
    if machine.ipv4 is not None:
        _router("route", "add", f"{machine.ipv4}/32", "dev", link)
    if machine.ipv6_network is not None:
        _router("-6", "route", "add", machine.ipv6_network, "dev", link)


def _unplug(server_id: int) -> None:
    """Remove the server's link (both ends, and the router's routes over it)."""
    if router_is_up():
        _router("link", "del", _link(server_id), check=False)


def _remove_server(server: ServerMachine) -> None:
    server.kill()
    _unplug(int(server.directory.name))
    server.release_cgroups()
    if Path(f"/run/netns/{server.namespace}").exists():
        _run(["ip", "netns", "delete", server.namespace], check=False)
    shutil.rmtree(server.directory, ignore_errors=True)


def _service_marker(directory: Path, name: str) -> str:
    """The argument that tells this backend's DHCP server or metadata service from any process."""
    if name == "dhcp":
        return f"--dhcp-hostsfile={directory / 'dhcp-hosts'}"
    return f"--servers={directory / 'servers'}"


def _stop_services(directory: Path) -> None:
    services_file = directory / "services.json"
    if not services_file.exists():
        return
    services: dict[str, int] = json.loads(services_file.read_text())
    for name, pid in services.items():
        _stop(pid, _service_marker(directory, name))
    services_file.unlink()


def down(directory: Path = CLOUD_DIR) -> None:
    """Remove every server (machine, namespace, link, cgroups, disk), every snapshot, the DHCP
    server, the metadata service and the firewall table, and the directory they lived in."""
    if not directory.exists():
        return
    for server_dir in sorted((directory / "servers").glob("*")):
        if server_dir.name.isdigit():
            _remove_server(ServerMachine(server_dir, namespace(int(server_dir.name)), directory / "empty"))
    _stop_services(directory)
    if router_is_up():
        _router("addr", "del", f"{topology.METADATA_V4}/32", "dev", "lo", check=False)
        cloud_firewall.remove_table()
    shutil.rmtree(directory, ignore_errors=True)

"""The lab: an emulated customer VPS with the shipped baseline, attacked from emulated internet
hosts, all inside network namespaces on this machine.

What is real: the rendered files (`render_host_baseline`, `gateway_run_args`), iptables and
ip6tables (nf_tables), `apply.sh --firewall-only`, sshd with the rendered drop-in, fail2ban with the
rendered jail and ban action, dockerd with the gateway container, kernel logging. What is not: there
is no systemd in a network namespace, so sshd's log reaches fail2ban through a file (backend
pyinotify instead of systemd) and the boot unit is exercised by running its ExecStart by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from components.gateway import GATEWAY_PASSWORD_ENV, GATEWAY_USER, GATEWAY_USER_ENV, gateway_run_args
from components.host_baseline import CUSTOMER_KEYS_FILE, HostSettings, render_host_baseline
from config import BaselinePolicy
from lab import topology
from lab.image import IMAGE, build_image
from lab.topology import PEERS, ROUTER, VPS, VPS_PEER, Peer

STATE_DIR = Path("/run/clawhosters-lab")
DATA_DIR = Path("/var/lib/clawhosters-lab")
NF_LOG_ALL_NETNS = Path("/proc/sys/net/netfilter/nf_log_all_netns")
REPO = Path(__file__).resolve().parent.parent


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
    """One emulated instance. `up()` builds it, `down()` removes everything it started."""

    state_dir: Path = STATE_DIR
    policy: BaselinePolicy = field(default_factory=BaselinePolicy)
    pids: dict[str, int] = field(default_factory=dict)

    # -- paths -----------------------------------------------------------------------------------
    @property
    def bundle_dir(self) -> Path:
        return self.state_dir / "baseline"

    @property
    def docker_socket(self) -> Path:
        return self.state_dir / "docker.sock"

    @property
    def fail2ban_dir(self) -> Path:
        return self.state_dir / "fail2ban"

    @property
    def sshd_log(self) -> Path:
        return self.state_dir / "sshd.log"

    @property
    def password(self) -> str:
        return (self.state_dir / "gateway.password").read_text().strip()

    @property
    def provisioning_key(self) -> Path:
        return self.state_dir / "provisioning_key"

    # -- commands --------------------------------------------------------------------------------
    def vps(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(in_ns(VPS, *command), check=check, timeout=timeout)

    def docker(self, *arguments: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(["docker", "-H", f"unix://{self.docker_socket}", *arguments], check=check, timeout=timeout)

    def fail2ban(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(in_ns(VPS, "fail2ban-client", "-c", str(self.fail2ban_dir), *arguments), check=check, timeout=30)

    def ruleset(self) -> str:
        """The VPS's filter and nat tables, both families, without counters or timestamps."""
        dumps = [
            self.vps(f"{tool}-save", "-t", table).stdout
            for tool in ("iptables", "ip6tables")
            for table in ("filter", "nat")
        ]
        text = "".join(line + "\n" for dump in dumps for line in dump.splitlines() if not line.startswith("#"))
        return re.sub(r" \[\d+:\d+\]$", "", text, flags=re.MULTILINE)

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

    # -- building --------------------------------------------------------------------------------
    def up(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, iptables, dockerd)")
        down(self.state_dir)
        self.state_dir.mkdir(mode=0o755, parents=True)
        (self.state_dir / "nf_log_all_netns").write_text(NF_LOG_ALL_NETNS.read_text())
        # Kernel LOG lines from a namespace other than the host's are dropped unless this is set.
        NF_LOG_ALL_NETNS.write_text("1\n")
        self._network()
        self.render()
        self.apply_firewall()
        self._sinks()
        self._sshd()
        self.start_fail2ban()
        self.start_docker()
        self.start_gateway()

    def _network(self) -> None:
        for namespace in topology.NAMESPACES:
            run(["ip", "netns", "add", namespace])
            run(in_ns(namespace, "ip", "link", "set", "lo", "up"))
        for command in (
            ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
            ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"],
            ["ip", "addr", "add", f"{topology.SINK_V4}/32", "dev", "lo"],
            ["ip", "-6", "addr", "add", f"{topology.SINK_V6}/128", "dev", "lo"],
        ):
            run(in_ns(ROUTER, *command))
        for peer in PEERS:
            self._link(peer)
        run(in_ns(ROUTER, "ip", "route", "add", topology.DOCKER_SUBNET, "via", VPS_PEER.ipv4))

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

    def render(self, ssh_enabled: bool = False, customer_keys: tuple[str, ...] = ()) -> None:
        """Write the shipped bundle, exactly as the baseline command would, into the lab."""
        host = HostSettings(
            ssh_enabled=ssh_enabled,
            customer_ssh_keys=customer_keys,
            provisioner_cidrs=topology.PROVISIONER_CIDRS,
        )
        if self.bundle_dir.exists():
            shutil.rmtree(self.bundle_dir)
        render_host_baseline(self.policy, host).write_to(self.bundle_dir)

    def apply_firewall(self) -> None:
        """The boot unit's ExecStart, and how an operator re-asserts the firewall."""
        self.vps("sh", str(self.bundle_dir / "apply.sh"), "--firewall-only")

    def _sinks(self) -> None:
        addresses = (topology.SINK_V4, topology.SINK_V6)
        command = in_ns(ROUTER, sys.executable, "-m", "lab.sink", *addresses, "--ports", *map(str, topology.SINK_PORTS))
        log = self.state_dir / "sink.log"
        self._spawn("sink", command, log)
        wait_until("the sinks", lambda: "ready" in log.read_text(), timeout=20)

    def _sshd(self) -> None:
        key = self.state_dir / "ssh_host_ed25519_key"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
        run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "provisioner",
                "-f",
                str(self.provisioning_key),
            ]
        )
        provisioning = self.state_dir / "provisioning_authorized_keys"
        provisioning.write_text(self.provisioning_key.with_suffix(".pub").read_text())
        provisioning.chmod(0o644)
        # The rendered drop-in, with its key files moved into the lab instead of the host's /etc.
        dropin = (self.bundle_dir / "etc/ssh/sshd_config.d/clawhosters.conf").read_text()
        lab_keys = f"AuthorizedKeysFile {provisioning} {self.bundle_dir}{CUSTOMER_KEYS_FILE}"
        dropin = "\n".join(lab_keys if line.startswith("AuthorizedKeysFile ") else line for line in dropin.splitlines())
        config = self.state_dir / "sshd_config"
        config.write_text(f"{dropin}\nHostKey {key}\nPidFile {self.state_dir / 'sshd.pid'}\nLogLevel INFO\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        run(["/usr/sbin/sshd", "-t", "-f", str(config)])
        # Without a journal, sshd's stderr becomes an auth.log-style file for fail2ban.
        pipeline = (
            f"exec /usr/sbin/sshd -D -e -f {config} 2>&1 | mawk -W interactive "
            '\'{sub(/\\r$/,""); print strftime("%b %e %H:%M:%S"), "vps sshd[1]:", $0; fflush()}\' '
            f">> {self.sshd_log}"
        )
        self.sshd_log.touch()
        self._spawn("sshd", in_ns(VPS, "sh", "-c", pipeline), self.state_dir / "sshd.stderr")
        wait_until("sshd", lambda: _listening(VPS, self.policy.inbound.ssh_port))

    def start_fail2ban(self, shipped: bool = True) -> None:
        """fail2ban with the shipped jail and action, or (shipped=False) with Debian's stock
        configuration, for comparison; either way reading the lab's sshd log."""
        _stop(self.pids.pop("fail2ban", None))
        shutil.rmtree(self.fail2ban_dir, ignore_errors=True)
        (self.state_dir / "fail2ban.sqlite3").unlink(missing_ok=True)
        shutil.copytree("/etc/fail2ban", self.fail2ban_dir)
        relatives = ("jail.d/clawhosters.local", "action.d/clawhosters-drop.conf") if shipped else ()
        for relative in relatives:
            shutil.copy(self.bundle_dir / "etc/fail2ban" / relative, self.fail2ban_dir / relative)
        # Lab only: no journal in a namespace, so the jail follows the sshd log file instead.
        (self.fail2ban_dir / "jail.d/zz-lab.local").write_text(
            f"[sshd]\nbackend = pyinotify\nlogpath = {self.sshd_log}\n"
        )
        (self.fail2ban_dir / "fail2ban.d/zz-lab.local").write_text(
            "[Definition]\n"
            f"logtarget = {self.state_dir / 'fail2ban.log'}\n"
            f"socket = {self.state_dir / 'fail2ban.sock'}\n"
            f"pidfile = {self.state_dir / 'fail2ban.pid'}\n"
            f"dbfile = {self.state_dir / 'fail2ban.sqlite3'}\n"
        )
        self._spawn(
            "fail2ban",
            in_ns(VPS, "fail2ban-server", "-f", "-x", "-c", str(self.fail2ban_dir)),
            self.state_dir / "fail2ban.stderr",
        )
        wait_until("fail2ban", lambda: self.fail2ban("status", "sshd", check=False).returncode == 0)

    def start_docker(self) -> None:
        data = DATA_DIR / "docker"
        data.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "daemon.json"
        config.write_text("{}\n")
        self._spawn(
            "dockerd",
            [
                "nsenter",
                f"--net=/run/netns/{VPS}",
                "dockerd",
                "--config-file",
                str(config),
                "--data-root",
                str(data),
                "--exec-root",
                str(self.state_dir / "docker-exec"),
                "--pidfile",
                str(self.state_dir / "docker.pid"),
                "-H",
                f"unix://{self.docker_socket}",
                "--bip",
                topology.DOCKER_BRIDGE,
            ],
            self.state_dir / "dockerd.log",
        )
        wait_until("dockerd", lambda: self.docker("info", check=False).returncode == 0, timeout=60)
        if self.docker("image", "inspect", IMAGE, check=False).returncode != 0:
            build_image(self.state_dir / "image-rootfs", self.docker_socket)

    def stop_docker(self) -> None:
        self.docker("rm", "--force", "openclaw-gateway", check=False)
        _stop(self.pids.pop("dockerd", None))
        self._save()

    def start_gateway(self) -> None:
        password_file = self.state_dir / "gateway.password"
        if not password_file.exists():
            password_file.write_text(secrets.token_urlsafe(24) + "\n")
            password_file.chmod(0o600)
        env_file = self.state_dir / "gateway.env"
        env_file.write_text(f"{GATEWAY_USER_ENV}={GATEWAY_USER}\n{GATEWAY_PASSWORD_ENV}={self.password}\n")
        env_file.chmod(0o600)
        arguments = gateway_run_args(self.policy, IMAGE, str(env_file))
        # The unit runs it in the foreground under systemd; the lab detaches it instead.
        self.docker(arguments[0], "--detach", *arguments[1:])
        port = self.policy.inbound.gateway_port
        wait_until("the gateway", lambda: _listening(VPS, port) and self.http_status("127.0.0.1", port) == 401)

    def http_status(self, host: str, port: int, namespace: str = VPS, auth: bool = False) -> int:
        """The HTTP status the gateway answers with, or 0 when nothing answers in 3 s."""
        target = f"[{host}]" if ":" in host else host
        command = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3"]
        if auth:
            command += ["-u", f"{GATEWAY_USER}:{self.password}"]
        result = run(in_ns(namespace, *command, f"http://{target}:{port}/"), check=False, timeout=10)
        return int(result.stdout or 0)


def _listening(namespace: str, port: int) -> bool:
    sockets = run(in_ns(namespace, "ss", "-Htln", f"sport = :{port}"), check=False).stdout
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
    """Remove a lab: its processes (by the PIDs it recorded), namespaces, sysctl and files."""
    state = state_dir / "state.json"
    if state.exists():
        pids: dict[str, int] = json.loads(state.read_text())["pids"]
        socket = state_dir / "docker.sock"
        if "dockerd" in pids and socket.exists():
            run(["docker", "-H", f"unix://{socket}", "rm", "--force", "openclaw-gateway"], check=False)
        for name in ("dockerd", "fail2ban", "sshd", "sink"):
            _stop(pids.get(name))
    for namespace in topology.NAMESPACES:
        if Path(f"/run/netns/{namespace}").exists():
            run(["ip", "netns", "delete", namespace], check=False)
    saved = state_dir / "nf_log_all_netns"
    if saved.exists():
        NF_LOG_ALL_NETNS.write_text(saved.read_text())
    if state_dir.exists():
        run(["umount", "--recursive", "--lazy", str(state_dir / "docker-exec")], check=False)
        shutil.rmtree(state_dir, ignore_errors=True)

"""The lab: a customer stack brought up by the real Pulumi CLI and providers on a small Hetzner
Cloud, all inside network namespaces on this machine.

    internet (router namespace): resolver, Debian mirror, image registry, sinks on SMTP/IRC/443
    Hetzner: the API emulator (lab/hcloud_api) whose servers are booted machines (lab/servers.py)
    client, attacker, provisioner namespaces: the rest of the world; the CLI runs in the provisioner's

`Lab.up()` builds the world and runs `pulumi up` of the lab's customer stack (`Lab.deploy`):
through `fleet.stacks.up` (a preview with the policy pack into a saved plan, then `up --plan`),
the hcloud provider creating the server and its firewall at the emulator, the command provider
running the remote commands over SSH on the server that boots.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.gateway import GATEWAY_USER
from components.host_baseline import BUNDLE_DIR
from config import BaselinePolicy
from config.customer import CustomerConfig, PlatformConfig
from config.loader import StackSettings, settings_from_mapping, stack_config
from fleet import stacks
from lab import servers, topology
from lab.machine import Image, ensure_image
from lab.release import release_dir
from lab.servers import ServerBackend, ServerMachine
from lab.topology import CI_RUNNER, PEERS, PROVISIONER, ROUTER, WORKER_HOSTS, Peer

if TYPE_CHECKING:
    from hcloud import Client
    from pulumi.automation import EngineEvent, Stack

STATE_DIR = Path("/run/clawhosters-lab")
DATA_DIR = Path("/var/lib/clawhosters-lab")
# The CLI's output of each failed stack operation (fleet.failures); kept by `down`.
LOGS_DIR = DATA_DIR / "logs"
NF_LOG_ALL_NETNS = Path("/proc/sys/net/netfilter/nf_log_all_netns")
NETNS_ETC = Path("/etc/netns")
REPO = Path(__file__).resolve().parent.parent
CUSTOMER_ID = "lab"
STACK = f"customer-{CUSTOMER_ID}"
GATEWAY_VERSIONS = ("1.0", "1.1")
# The emulator answers here in the host's namespace (the lab itself) and in every platform host's
# (the provisioner's and the worker hosts': the CLI and its providers).
HETZNER_PORT = 47180
HETZNER_PROJECT = "lab"
# A second project of the lab's cloud, for the control plane's fleet spanning projects.
SECOND_HETZNER_PROJECT = "lab-2"
HETZNER_PROJECTS = (HETZNER_PROJECT, SECOND_HETZNER_PROJECT)
# The project of the platform's DNS zone, and nothing else: its token writes every customer's records.
DNS_PROJECT = "lab-dns"
# Resource types whose steps are the deploy's own, not the engine's bookkeeping.
BOOKKEEPING = re.compile(r"^(pulumi:pulumi:Stack|pulumi:providers:.*|clawhosters:.*)$")
# The key that marks a secret in a stack's exported state (pulumi/sdk/go/common/resource/sig).
SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"  # noqa: S105 (not a secret: a type marker)
REPLACEMENT_OPS = {"replace", "create-replacement", "delete-replaced", "discard-replaced", "import-replacement"}


class LabError(RuntimeError):
    pass


def run(
    command: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 60,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout, input=stdin, env=env, cwd=cwd, check=False
    )
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


@dataclass(frozen=True)
class Step:
    """What `pulumi up` did to one resource, as the engine reported it."""

    name: str
    type: str
    action: str  # create, update, replace, delete, unchanged
    seconds: float


class StepRecorder:
    """Collects the engine's resource events of one operation into steps, in the order they began."""

    def __init__(self) -> None:
        self._ops: dict[str, list[str]] = {}
        self._types: dict[str, str] = {}
        self._started: dict[str, float] = {}
        self._ended: dict[str, float] = {}

    def __call__(self, event: EngineEvent) -> None:
        now = time.monotonic()
        for payload, ended in ((event.resource_pre_event, False), (event.res_outputs_event, True)):
            # A gated `up` previews first: its planned steps are not what the `up` did.
            if payload is None or payload.planning or BOOKKEEPING.match(payload.metadata.type):
                continue
            urn = payload.metadata.urn
            self._types[urn] = payload.metadata.type
            self._ops.setdefault(urn, []).append(str(payload.metadata.op.value))
            self._started.setdefault(urn, now)
            if ended:
                self._ended[urn] = now

    def steps(self) -> list[Step]:
        def action(ops: list[str]) -> str:
            if REPLACEMENT_OPS & set(ops):
                return "replace"
            return "unchanged" if ops[0] == "same" else ops[0]

        return [
            Step(
                name=urn.rsplit("::", 1)[1],
                type=self._types[urn],
                action=action(ops),
                seconds=self._ended.get(urn, self._started[urn]) - self._started[urn],
            )
            for urn, ops in sorted(self._ops.items(), key=lambda item: self._started[item[0]])
        ]


def _new_secret(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class Lab:
    """One emulated customer instance. `up()` builds and deploys it, `down()` removes everything."""

    state_dir: Path = STATE_DIR
    policy: BaselinePolicy = field(default_factory=BaselinePolicy)
    pids: dict[str, int] = field(default_factory=dict)
    image_digests: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image: Image | None = None
        self.settings: StackSettings | None = None
        self.outputs: dict[str, Any] = {}
        self.first_steps: list[Step] = []
        self._saved_environment: dict[str, str | None] = {}
        self._password: str | None = None

    # -- Hetzner and the stack ---------------------------------------------------------------------
    @property
    def hetzner_endpoint(self) -> str:
        return f"http://127.0.0.1:{HETZNER_PORT}/v1"

    def secret(self, name: str, length: int) -> str:
        """A secret of the lab's, made on first use and kept (mode 0600) in its state directory."""
        path = self.state_dir / name
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(_new_secret(length))
        return path.read_text()

    @property
    def passphrase(self) -> str:
        """Of the stacks' secrets (the passphrase secrets provider)."""
        return self.secret("pulumi.passphrase", 32)

    @property
    def hetzner_token(self) -> str:
        # The provider insists on 64 characters.
        return self.secret("hetzner.token", 64)

    def project_token(self, project: str) -> str:
        return self.hetzner_token if project == HETZNER_PROJECT else self.secret(f"hetzner.{project}.token", 64)

    @property
    def dns_token(self) -> str:
        return self.secret(f"hetzner.{DNS_PROJECT}.token", 64)

    @property
    def dns_hosts_dir(self) -> Path:
        """Where the emulator publishes the zones' A and AAAA records, which the lab's resolver serves."""
        return self.state_dir / "dns-hosts"

    def resolve(self, name: str) -> dict[int, list[str]]:
        """The addresses of `name` by family, as the client's own resolver (glibc, its resolv.conf
        naming the lab's resolver) finds them; none when the name does not exist."""
        answers: dict[int, list[str]] = {}
        for family in (4, 6):
            found = run(in_ns(topology.CLIENT.namespace, "getent", f"ahostsv{family}", name), check=False).stdout
            answers[family] = sorted({line.split()[0] for line in found.splitlines()})
        return answers

    def project_read_token(self, project: str) -> str:
        """The project's read-only token (Hetzner's "Read" permission: GET requests only)."""
        return self.secret(f"hetzner.{project}.read-token", 64)

    def hetzner_usage(self, project: str = HETZNER_PROJECT, *, read_only: bool = False) -> dict[str, Any]:
        """The emulator's count of one of the project's tokens' requests: in all, refused (429), writes
        refused to a read-only token, by route."""
        import urllib.request

        from lab.hcloud_api.app import token_digest

        digest = token_digest(self.project_read_token(project) if read_only else self.project_token(project))
        url = self.hetzner_endpoint.removesuffix("/v1") + "/_lab/requests"
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 (the lab's own emulator)
            usage: dict[str, Any] = next(t for t in json.load(answer)["tokens"] if t["token_sha256"] == digest)
        return usage

    @contextlib.contextmanager
    def sold_out(self, *pairs: tuple[str, str]) -> Iterator[None]:
        """Hetzner out of these (server type, location) pairs, for every project, until the block ends."""
        self._set_stock(pairs)
        try:
            yield
        finally:
            self._set_stock(())

    def _set_stock(self, pairs: Iterable[tuple[str, str]]) -> None:
        import urllib.request

        body = json.dumps({"sold_out": [{"server_type": st, "location": location} for st, location in pairs]})
        url = self.hetzner_endpoint.removesuffix("/v1") + "/_lab/stock"
        request = urllib.request.Request(url, data=body.encode(), method="PUT")  # noqa: S310 (the lab's own emulator)
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310

    def hetzner(self, project: str = HETZNER_PROJECT) -> Client:
        """Hetzner's own client on one of the lab's projects (the lab's own by default)."""
        from hcloud import Client

        token = self.project_token(project)
        return Client(token=token, api_endpoint=self.hetzner_endpoint, poll_interval=0.25)

    def workspace(self, program_dir: Path | None = None) -> stacks.Workspace:
        """The program (by default this checkout, or the release of it with the lab's baseline) on
        the lab's file backend, judged by its own policy pack as a commit ships them together; a
        program without one (a tampered copy) by the platform's. The CLI runs in the provisioner's
        namespace."""
        release = release_dir(self.policy, self.state_dir / "releases")
        program = program_dir or release
        own_pack = program / "policy"
        return stacks.Workspace(
            program_dir=program,
            policy_pack=own_pack if own_pack.is_dir() else release / "policy",
            backend_url=f"file://{DATA_DIR / 'pulumi'}",
            stacks_dir=self.state_dir / "stacks",
            pulumi_root=self.state_dir / "cli",
            shutdown_seconds=servers.SHUTDOWN_SECONDS + 30,
            logs_dir=LOGS_DIR,
        )

    def _cli(self) -> None:
        """`pulumi` for the Automation API: the pinned CLI, run inside the provisioner's namespace."""
        import toolchain

        binary = self.state_dir / "cli" / "bin" / "pulumi"
        binary.parent.mkdir(parents=True)
        real = toolchain.LINK.resolve() / "bin" / "pulumi"
        relay = REPO / "lab" / "cli.py"
        binary.write_text(f'#!/bin/sh\nexec {sys.executable} {relay} {real} "$@"\n')
        binary.chmod(0o755)

    def _environment(self) -> None:
        """What an operator's shell holds: the Hetzner token and endpoint (the provider and
        fleet.resize read them), the passphrase of the stack's secrets. Restored by `close()`."""
        values = {
            "HCLOUD_TOKEN": self.hetzner_token,
            "HCLOUD_DNS_TOKEN": self.dns_token,
            "HCLOUD_ENDPOINT": self.hetzner_endpoint,
            "PULUMI_CONFIG_PASSPHRASE": self.passphrase,
        }
        for name, value in values.items():
            self._saved_environment.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        # The same for a shell (`set -a; . env`), with the CLI's own settings.
        environment = self.state_dir / "env"
        environment.touch(mode=0o600)
        shell = values | self.workspace(REPO).env_vars()
        environment.write_text("".join(f"{name}={shlex.quote(value)}\n" for name, value in shell.items()))

    def close(self) -> None:
        for name, value in self._saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environment.clear()

    def stack(self, program_dir: Path | None = None) -> Stack:
        return stacks.open_stack(self.workspace(program_dir), STACK)

    def stack_names(self) -> list[str]:
        """The stacks the lab's backend holds."""
        return stacks.backend_stack_names(self.workspace())

    def deployed(self) -> bool:
        """Whether a lab with a stack is up (from any process: its state is on disk)."""
        return (self.state_dir / "hetzner.token").exists() and (DATA_DIR / "pulumi" / ".pulumi" / "stacks").exists()

    def destroy(self) -> int:
        """What cancelling a customer does: an `up` with `decommission` (the server loses its
        protection, a snapshot is taken), `pulumi destroy`, `pulumi stack rm`. The snapshot's id."""
        self._environment()
        settings = self.settings or settings_from_mapping(
            {key: value.value for key, value in self.stack().get_all_config().items()}
        )
        customer = settings.customer.model_copy(update={"decommission": True})
        self.deploy(settings.model_copy(update={"customer": customer}))
        snapshot_id = int(self.outputs["snapshot_id"])
        stacks.destroy(self.workspace(), STACK)
        self.stack().workspace.remove_stack(STACK)
        # The next deploy is a new customer's first, with the settings it had and new keys.
        self.settings, self.outputs = settings, {}
        (self.state_dir / "provisioning_key").unlink(missing_ok=True)
        return snapshot_id

    # -- the customer's instance -------------------------------------------------------------------
    def gateway_image(self, version: str = GATEWAY_VERSIONS[0]) -> str:
        repository = f"{topology.REGISTRY_NAME}/{topology.GATEWAY_REPOSITORY}"
        return f"{repository}:{version}@{self.image_digests[version]}"

    def default_settings(self) -> StackSettings:
        return StackSettings(
            customer=CustomerConfig(customer_id=CUSTOMER_ID, gateway_image=self.gateway_image()),
            platform=PlatformConfig(provisioner_cidrs=topology.PROVISIONER_CIDRS, dns_zone=topology.PLATFORM_ZONE),
        )

    def deploy(
        self,
        settings: StackSettings | None = None,
        policy: BaselinePolicy | None = None,
        program_dir: Path | None = None,
    ) -> list[Step]:
        """`pulumi up` of the lab's stack with these settings (default: the last ones) and baseline
        (a release of the program when it is not this checkout's); the steps it took."""
        self.settings = settings or self.settings or self.default_settings()
        if policy is not None:
            self.policy = policy
        recorder = StepRecorder()
        self._password = None
        self.outputs = stacks.up(
            self.workspace(program_dir),
            STACK,
            config=stack_config(self.settings),
            on_event=recorder,
            create=True,
        )
        return recorder.steps()

    def preview(self, settings: StackSettings, program_dir: Path | None = None) -> list[str]:
        """`pulumi preview --policy-pack` of the stack with other settings, which are not kept: the
        CLI's output lines. Raises fleet.failures.StackOperationFailed when the preview fails."""
        handle = self.stack(program_dir)
        previous = {key: value.value for key, value in handle.get_all_config().items()}
        lines: list[str] = []
        try:
            stacks.preview(
                self.workspace(program_dir),
                STACK,
                lambda _event: None,
                on_output=lines.append,
                config=stack_config(settings),
            )
        finally:
            stacks.write_config(handle, previous)
        return lines

    @property
    def server_id(self) -> int:
        return int(self.outputs["server_id"])

    @property
    def ipv4(self) -> str:
        return str(self.outputs["ipv4_address"])

    @property
    def ipv6(self) -> str:
        return str(self.outputs["ipv6_address"])

    def address(self, family: int) -> str:
        """The server's public address of one family (4 or 6)."""
        return self.ipv4 if family == 4 else self.ipv6

    @property
    def namespace(self) -> str:
        """The server's network namespace: its side of the network, shared with the machine."""
        return servers.namespace(self.server_id)

    @property
    def machine(self) -> ServerMachine:
        return ServerBackend().machine(self.server_id)

    def resources(self) -> list[dict[str, Any]]:
        """The stack's resources from its state, secrets in plain text (the lab's own check only)."""
        deployment: dict[str, Any] = self.stack().export_stack().deployment
        resources: list[dict[str, Any]] = _reveal(deployment.get("resources", []))
        return resources

    def command_inputs(self, name: str) -> dict[str, Any]:
        """A remote command's inputs as the stack's state has them ("gateway", "baseline", ...)."""
        wanted = f"{STACK}-{name}"
        for resource in self.resources():
            if resource["type"] == "command:remote:Command" and resource["urn"].endswith(f"::{wanted}"):
                inputs: dict[str, Any] = resource["inputs"]
                return inputs
        raise LabError(f"the stack has no command {wanted}")

    @property
    def password(self) -> str:
        """The gateway's password, a secret output of the stack (read once per deploy)."""
        if self._password is None:
            self._password = str(self.stack().outputs()["gateway_password"].value)
        return self._password

    @property
    def provisioning_key(self) -> Path:
        """The provisioning private key, as a file for OpenSSH's client."""
        path = self.state_dir / "provisioning_key"
        if not path.exists():
            key = next(
                resource["outputs"]["privateKeyOpenssh"]
                for resource in self.resources()
                if resource["type"] == "tls:index/privateKey:PrivateKey"
                and resource["urn"].endswith("-provisioning-key")
            )
            path.touch(mode=0o600)
            path.write_text(key)
        return path

    # -- commands ----------------------------------------------------------------------------------
    def vps(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """A command in the server's network namespace, with this machine's tools."""
        return run(in_ns(self.namespace, *command), check=check, timeout=timeout)

    def host(
        self, *command: str, check: bool = True, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A command inside the booted machine, as root."""
        result = self.machine.run(*command, check=False, timeout=timeout, stdin=stdin)
        if check and result.returncode != 0:
            raise LabError(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def host_process(self, *command: str) -> subprocess.Popen[str]:
        return self.machine.popen(*command)

    def docker(self, *arguments: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.host("docker", *arguments, check=check, timeout=timeout)

    def fail2ban(self, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.host("fail2ban-client", *arguments, check=check, timeout=30)

    def journal(self, *arguments: str) -> str:
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
        """Reboot the server through Hetzner's API (the OS reboots; every unit starts from nothing);
        wait until the gateway serves."""
        hetzner = self.hetzner()
        hetzner.servers.reboot(hetzner.servers.get_by_id(self.server_id)).wait_until_finished(max_retries=800)
        self.wait_for_gateway()

    def wait_for_gateway(self, timeout: float = 90) -> None:
        port = self.policy.inbound.gateway_port
        wait_until("the gateway", lambda: self.http_status("127.0.0.1", port) == 401, timeout=timeout)

    def spawn(self, name: str, command: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        """Start a daemon in its own process group and record its PID for `down`."""
        with log.open("ab") as output:
            process = subprocess.Popen(
                list(command),
                env=env,
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
    def internet(self) -> None:
        """Only the lab's internet: namespaces, router, resolver, mirror, registry, sinks."""
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

    def up(self, deploy: bool = True) -> list[Step]:
        """The internet and Hetzner; with `deploy`, the stack's first `pulumi up`."""
        self.internet()
        self._hetzner()
        (DATA_DIR / "pulumi").mkdir(parents=True, exist_ok=True)
        self._cli()
        self._environment()
        if deploy:
            self.first_steps = self.deploy()
        return self.first_steps

    def _hetzner(self) -> None:
        """The API emulator with booted servers; the customers' two projects and the DNS project, whose
        tokens the lab keeps; the platform's zone in the DNS project."""
        command = [
            sys.executable,
            "-m",
            "lab.hcloud_api",
            "--machines",
            "--state",
            str(DATA_DIR / "hcloud"),
            "--listen",
            f"127.0.0.1:{HETZNER_PORT}",
            *(f"--listen-in={peer.namespace}" for peer in (PROVISIONER, *WORKER_HOSTS, CI_RUNNER)),
            *(
                f"--token={project}={self.project_token(project)}"
                for project in (HETZNER_PROJECT, SECOND_HETZNER_PROJECT)
            ),
            *(
                f"--read-token={project}={self.project_read_token(project)}"
                for project in (HETZNER_PROJECT, SECOND_HETZNER_PROJECT)
            ),
            f"--token={DNS_PROJECT}={self.dns_token}",
            f"--dns-hosts-dir={self.dns_hosts_dir}",
        ]
        self.spawn("hetzner", command, self.state_dir / "hetzner.log")
        wait_until("Hetzner's API", lambda: _listening(PROVISIONER.namespace, HETZNER_PORT), timeout=60)
        from hcloud import Client

        dns = Client(token=self.dns_token, api_endpoint=self.hetzner_endpoint, poll_interval=0.25)
        dns.zones.create(name=topology.PLATFORM_ZONE, mode="primary").action.wait_until_finished()

    def _network(self) -> None:
        for namespace in topology.NAMESPACES:
            run(["ip", "netns", "add", namespace])
            run(in_ns(namespace, "ip", "link", "set", "lo", "up"))
        # The client looks names up at the lab's resolver, as a machine on the internet asks its ISP's:
        # `ip netns exec` puts /etc/netns/<namespace>/resolv.conf in place of the host's.
        resolver = NETNS_ETC / topology.CLIENT.namespace
        resolver.mkdir(parents=True, exist_ok=True)
        (resolver / "resolv.conf").write_text(f"nameserver {topology.DNS_V4}\noptions timeout:2 attempts:1\n")
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
        self.spawn("sink", sink, self.state_dir / "sink.log")
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
            # The platform's zone as the emulator publishes it (Hetzner's nameservers serve it), read
            # again whenever it changes.
            f"--hostsdir={self.dns_hosts_dir}",
            # Every other name: an immediate NXDOMAIN, as for a name that does not exist.
            "--address=/#/",
        ]
        self.dns_hosts_dir.mkdir()
        self.spawn("dns", in_ns(ROUTER, *dns), self.state_dir / "dns.log")
        mirror = [sys.executable, "-m", "http.server", "80", "--bind", topology.MIRROR_V4, "--directory"]
        self.spawn("mirror", in_ns(ROUTER, *mirror, str(self.image.mirror)), self.state_dir / "mirror.log")
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
        self.spawn("registry", in_ns(ROUTER, "docker-registry", "serve", str(config)), self.state_dir / "registry.log")
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

    def http_status(
        self, host: str, port: int, namespace: str | None = None, auth: bool = False, path: str = "/"
    ) -> int:
        """The HTTP status the gateway answers with, or 0 when nothing answers in 3 s; asked from the
        server's own namespace unless another is named."""
        return int(self.http_get(host, port, namespace, auth, path)[0])

    def http_get(
        self, host: str, port: int, namespace: str | None = None, auth: bool = False, path: str = "/"
    ) -> tuple[int, str]:
        target = f"[{host}]" if ":" in host else host
        command = ["curl", "-s", "-w", "\n%{http_code}", "--max-time", "3"]
        if auth:
            command += ["-u", f"{GATEWAY_USER}:{self.password}"]
        where = namespace or self.namespace
        result = run(in_ns(where, *command, f"http://{target}:{port}{path}"), check=False, timeout=10)
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
    """Remove a lab: Hetzner's servers, the daemons (by the PIDs it recorded), namespaces, sysctl,
    the stack's state and every file."""
    state = state_dir / "state.json"
    pids: dict[str, Any] = json.loads(state.read_text())["pids"] if state.exists() else {}
    # The emulator first: no action may boot a machine while the servers go.
    _stop(pids.pop("hetzner", None))
    servers.down()
    for pid in pids.values():
        _stop(pid)
    for namespace in topology.NAMESPACES:
        if Path(f"/run/netns/{namespace}").exists():
            # What the daemons left running there (a killed worker host's CLIs) goes with it.
            for pid in run(["ip", "netns", "pids", namespace], check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            run(["ip", "netns", "delete", namespace], check=False)
        shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)
    saved = state_dir / "nf_log_all_netns"
    if saved.exists():
        NF_LOG_ALL_NETNS.write_text(saved.read_text())
    for directory in (state_dir, DATA_DIR / "hcloud", DATA_DIR / "pulumi"):
        shutil.rmtree(directory, ignore_errors=True)


def _reveal(value: Any) -> Any:
    """A state value with every secret (`stack export --show-secrets` writes one as its signature
    and its JSON-encoded `plaintext`) replaced by what it holds."""
    if isinstance(value, dict):
        if SECRET_SIGNATURE in value and "plaintext" in value:
            return _reveal(json.loads(value["plaintext"]))
        return {key: _reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_reveal(item) for item in value]
    return value

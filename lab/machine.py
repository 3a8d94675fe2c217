"""A server as Hetzner hands it over: a booted Debian 12 machine.

`ensure_image()` builds, once per package list, what the lab needs to emulate a fresh `debian-12`
server and the internet it sees:
- a Debian 12 root file system from the Debian archive (debootstrap), with what a fresh server has:
  systemd, openssh-server with Debian's stock configuration, cloud-init (set up for Hetzner's
  datasource), ifupdown and dhclient, ca-certificates, curl. Not iptables, fail2ban or Docker: the
  program's packages step installs those;
- an apt mirror of exactly the packages that step asks for, with the archive's own signed
  `InRelease` and package index, so apt inside the machine verifies them with Debian's own keys;
- the lab's certificate authority, trusted by the machine as a real server trusts the public
  ones, and the registry's certificate.

`Machine` boots a copy of that file system with systemd-nspawn inside a network namespace; the
servers of the lab's Hetzner Cloud (lab/servers.py) are such machines, configured by cloud-init
from the metadata service.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.instance import HOST_PACKAGES
from lab import topology

SUITE = "bookworm"
ARCHIVE = "http://deb.debian.org/debian"
# What a fresh Hetzner debian-12 server has that matters here. python3-cffi-backend is a virtual
# package's provider that debootstrap does not resolve on its own (cloud-init needs it). ifupdown
# and isc-dhcp-client bring up the network cloud-init renders from the metadata's network-config
# (its ephemeral DHCP before the metadata is read runs dhclient too); dmidecode is how cloud-init
# and ds-identify read the firmware's SMBIOS table where the kernel exposes no /sys/class/dmi.
STOCK_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "cloud-init",
    "python3-cffi-backend",
    "ca-certificates",
    "curl",
    "iproute2",
    "locales",
    "ifupdown",
    "isc-dhcp-client",
    "dmidecode",
)
# Bumped when the way an image is prepared changes, so a cached image is rebuilt.
IMAGE_FORMAT = 3
IMAGES = Path("/var/lib/clawhosters-lab/images")
# The provider's image settings, as Hetzner's debian-12 image ships them in cloud.cfg.d: cloud-init
# is told its datasource instead of probing for one (ds-identify then enables Hetzner's alone; the
# datasource itself still checks the SMBIOS manufacturer and serial), and root logs in with the
# keys the metadata service lists.
PROVIDER_CLOUD_CFG = """# The provider's image settings, as Hetzner's debian-12 image has them.
datasource_list: [ Hetzner, None ]
disable_root: false
"""


class MachineError(RuntimeError):
    pass


def _run(command: list[str], timeout: float = 600, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise MachineError(f"{shlex.join(command)} exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result


@dataclass(frozen=True)
class Image:
    directory: Path

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    @property
    def mirror(self) -> Path:
        return self.directory / "mirror"

    @property
    def ca_certificate(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def registry_certificate(self) -> Path:
        return self.directory / "registry.crt"

    @property
    def registry_key(self) -> Path:
        return self.directory / "registry.key"


def image_key() -> str:
    recipe = {
        "suite": SUITE,
        "stock": STOCK_PACKAGES,
        "host": HOST_PACKAGES,
        "format": IMAGE_FORMAT,
        "registry": topology.REGISTRY_NAME,
        "dns": topology.DNS_V4,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def ensure_image() -> Image:
    """The cached image for today's package lists, built first if there is none."""
    image = Image(IMAGES / image_key())
    if (image.directory / "complete").exists():
        return image
    building = image.directory.with_name(image.directory.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    staged = Image(building)
    _debootstrap(staged.rootfs)
    _mirror_host_packages(staged)
    _certificates(staged)
    _provider_settings(staged)
    (building / "complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
    shutil.rmtree(image.directory, ignore_errors=True)
    building.rename(image.directory)
    return image


def _debootstrap(rootfs: Path) -> None:
    _run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(STOCK_PACKAGES)}", SUITE, str(rootfs), ARCHIVE],
        timeout=1200,
    )


def _mirror_host_packages(image: Image) -> None:
    """An apt mirror holding the archive's signed index and every .deb the packages step needs."""
    lists = image.rootfs / "var/lib/apt/lists"
    prefix = "deb.debian.org_debian_dists_" + SUITE
    dists = image.mirror / "debian/dists" / SUITE
    binary = dists / "main/binary-amd64"
    binary.mkdir(parents=True)
    shutil.copy(lists / f"{prefix}_InRelease", dists / "InRelease")
    packages = (lists / f"{prefix}_main_binary-amd64_Packages").read_bytes()
    (binary / "Packages").write_bytes(packages)
    # The archive announces Acquire-By-Hash: apt asks for the index by its checksum.
    by_hash = binary / "by-hash/SHA256"
    by_hash.mkdir(parents=True)
    (by_hash / hashlib.sha256(packages).hexdigest()).write_bytes(packages)
    _mirror_translations(image, dists)
    # What apt in the stock machine would fetch for the packages step: exactly those versions.
    uris = _run(
        [
            "chroot",
            str(image.rootfs),
            "apt-get",
            "install",
            "--print-uris",
            "-qq",
            "--no-install-recommends",
            *HOST_PACKAGES,
        ]
    ).stdout
    for line in uris.splitlines():
        url = line.split()[0].strip("'")
        # apt prints URLs quoted (`%2b`); the mirror serves the file names.
        target = image.mirror / "debian" / unquote(url.removeprefix(ARCHIVE + "/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        _run(["curl", "-fsS", "--retry", "3", "-o", str(target), url], timeout=300)


def _mirror_translations(image: Image, dists: Path) -> None:
    """The English package descriptions `apt-get update` fetches, the very file the signed
    InRelease names (fetched by its checksum, so a newer archive cannot slip in)."""
    release = (dists / "InRelease").read_text()
    sha256 = release[release.index("\nSHA256:") :]
    translation = "main/i18n/Translation-en.xz"
    digest = next(line.split()[0] for line in sha256.splitlines() if line.endswith(f" {translation}"))
    by_hash = dists / "main/i18n/by-hash/SHA256" / digest
    by_hash.parent.mkdir(parents=True)
    url = f"{ARCHIVE}/dists/{SUITE}/main/i18n/by-hash/SHA256/{digest}"
    _run(["curl", "-fsS", "--retry", "3", "-o", str(by_hash), url], timeout=300)
    if hashlib.sha256(by_hash.read_bytes()).hexdigest() != digest:
        raise MachineError(f"{url} does not match the archive's InRelease")
    shutil.copy(by_hash, dists / translation)


def _certificates(image: Image) -> None:
    """The lab's certificate authority and the registry's certificate."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clawhosters lab CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, topology.REGISTRY_NAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(topology.REGISTRY_NAME)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    image.ca_certificate.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    image.registry_certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    image.registry_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    image.registry_key.chmod(0o600)


def _provider_settings(image: Image) -> None:
    """What the provider's image and network give every server before its first boot."""
    root = image.rootfs
    (root / "etc/cloud/cloud.cfg.d/90-provider.cfg").write_text(PROVIDER_CLOUD_CFG)
    # The locale cloud-init sets by default, generated as on the provider's image.
    locale_gen = root / "etc/locale.gen"
    locale_gen.write_text(locale_gen.read_text().replace("# en_US.UTF-8 UTF-8", "en_US.UTF-8 UTF-8"))
    _run(["chroot", str(root), "locale-gen"])
    # The provider's resolver; the lab's internet answers for the mirror and the registry.
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text(f"nameserver {topology.DNS_V4}\n")
    # Trusted like the public certificate authorities a real server trusts.
    shutil.copy(image.ca_certificate, root / "usr/local/share/ca-certificates/clawhosters-lab-ca.crt")
    _run(["chroot", str(root), "update-ca-certificates"])
    # A fresh server has never run apt against its mirror.
    for stale in (root / "var/lib/apt/lists").glob("deb.debian.org_*"):
        stale.unlink()
    _run(["chroot", str(root), "apt-get", "clean"])


def _cgroup_parents() -> list[Path]:
    """This process's own cgroup in the unified hierarchy and in systemd's named one."""
    mounts: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, _, super_block = line.partition(" - ")
        fstype, _source, options = super_block.split()[:3]
        root, mountpoint = fields.split()[3:5]
        if root != "/":
            continue
        if fstype == "cgroup2":
            mounts.setdefault("", Path(mountpoint))
        elif fstype == "cgroup" and "name=systemd" in options.split(","):
            mounts.setdefault("name=systemd", Path(mountpoint))
    parents = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers in mounts:
            parents.append(mounts[controllers] / path.lstrip("/"))
    return parents


class Machine:
    """One booted machine, its root file system under `directory`."""

    def __init__(self, directory: Path, namespace: str) -> None:
        self.directory = directory
        self.namespace = namespace
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    def boot(self, until_booted: bool = True, timeout: float = 120) -> None:
        """Start the machine; with `until_booted`, return once systemd has finished booting.
        Without, return at once, as Hetzner's API does: sshd comes up when it comes up."""
        if self.running:
            raise MachineError("the machine is already running")
        for cgroup in self.cgroups():
            cgroup.mkdir(exist_ok=True)
        with self.console_log.open("ab") as console:
            self.process = subprocess.Popen(
                self.nspawn_command(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                env=os.environ | self.nspawn_environment(),
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self.process.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MachineError(f"the machine did not boot: {self.console_log.read_text()[-2000:]}")
            if self._leader() is not None:
                if not until_booted:
                    return
                state = self.run("systemctl", "is-system-running", check=False, timeout=10).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.5)
        raise MachineError(f"the machine did not finish booting within {timeout:.0f} s")

    def nspawn_arguments(self) -> list[str]:
        return [
            "systemd-nspawn",
            "--boot",
            f"--directory={self.rootfs}",
            f"--machine={self.namespace}",
            "--register=no",
            "--keep-unit",
            "--capability=all",
            "--system-call-filter=@keyring bpf",
            f"--network-namespace-path=/run/netns/{self.namespace}",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
            "--console=read-only",
        ]

    def nspawn_command(self) -> list[str]:
        """nspawn, moved into the machine's cgroups before it starts, so that nothing of the
        machine runs elsewhere."""
        enter = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 1; shift; done; shift; exec "$@"'
        procs = [str(cgroup / "cgroup.procs") for cgroup in self.cgroups()]
        return ["sh", "-c", enter, "sh", *procs, "--", *self.nspawn_arguments()]

    def nspawn_environment(self) -> dict[str, str]:
        return {
            # nspawn mounts /proc/sys/net read-only in a joined namespace; Docker must enable forwarding.
            "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network",
            # The unified hierarchy only, the machine's own subtree as its root: its systemd and
            # Docker create their cgroups there. With the host's legacy hierarchies as well (a
            # hybrid host whose PID 1 is not systemd), systemd cannot place itself ("Failed to
            # allocate manager object").
            "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1",
        }

    def cgroups(self) -> list[Path]:
        """The machine's own cgroup, below this process's, in each hierarchy nspawn places it in:
        several machines never share one, and none manages the host's."""
        return [parent / self.namespace for parent in _cgroup_parents()]

    def release_cgroups(self) -> None:
        """Remove the machine's cgroups once it is off (deepest first: only empty ones go)."""
        for cgroup in self.cgroups():
            if not cgroup.is_dir():
                continue
            for directory, _, _ in sorted(os.walk(cgroup), key=lambda entry: -len(entry[0])):
                with contextlib.suppress(OSError):
                    Path(directory).rmdir()

    @property
    def pid_file(self) -> Path:
        return self.directory / "nspawn.pid"

    @property
    def pid(self) -> int | None:
        """nspawn's PID while the machine runs, also when another process booted it (by the
        recorded PID, checked against the command line in case the PID was reused)."""
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        try:
            pid = int(self.pid_file.read_text())
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return None
        return pid if f"--directory={self.rootfs}".encode() in arguments else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def _leader(self) -> int | None:
        """The machine's PID 1, as the host sees it: nspawn's child."""
        pid = self.pid
        if pid is None:
            return None
        children = Path(f"/proc/{pid}/task/{pid}/children")
        try:
            pids = children.read_text().split()
        except FileNotFoundError:
            return None
        return int(pids[0]) if pids else None

    def run(
        self,
        *command: str,
        check: bool = True,
        timeout: float = 60,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """A command inside the machine, in all of its namespaces, as root."""
        leader = self._leader()
        if leader is None:
            raise MachineError("the machine is not running")
        result = subprocess.run(
            ["nsenter", "-t", str(leader), "-a", "--", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
            check=False,
        )
        if check and result.returncode != 0:
            raise MachineError(f"{shlex.join(command)} exited {result.returncode}: {result.stderr.strip()}")
        return result

    def popen(self, *command: str) -> subprocess.Popen[str]:
        """A command inside the machine that keeps running while the caller goes on."""
        leader = self._leader()
        if leader is None:
            raise MachineError("the machine is not running")
        return subprocess.Popen(
            ["nsenter", "-t", str(leader), "-a", "--", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def journal(self, *arguments: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "short-precise", *arguments, timeout=60).stdout

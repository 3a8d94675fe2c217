#!/usr/bin/python3
"""clawhosters baseline drift check: does the live host still match its installed baseline bundle?

Installed as BUNDLE_DIR/drift/check.py and run as root by clawhosters-drift.timer with Debian 12's
own python3 (standard library only: it runs on the VPS, not in the program's virtualenv). Each probe
compares one part of the host with drift/expected.json, rendered from the same policy as the rest of
the bundle:

  firewall    our chains (CLAW-*), their hooks and the INPUT policy, IPv4 and IPv6. The expected
              state is what apply.sh --firewall-only builds in a throwaway network namespace, so both
              sides are normalised by the same iptables. Docker's chains and the content of CLAW-BANS
              (fail2ban's) are not compared; INPUT and OUTPUT hold nothing but our hooks.
  fail2ban    the jail runs with the shipped settings and action.
  sshd        `sshd -T` shows the settings the baseline sets.
  containers  only the gateway container publishes a port on a public address, and only the gateway port.

Every difference is logged as `BASELINE_DRIFT: <what>` on stderr (the journal), repaired (apply.sh
--firewall-only, shipped files restored, stopped services started, stray containers stopped) and
checked again; the outcome goes to a JSON status file that the platform reads over SSH.

    check.py [--only firewall,fail2ban,sshd,containers] [--no-repair] [--status FILE]
             [--sshd-config FILE] [--fail2ban-socket FILE]

Exit status: 0 when the baseline holds or was repaired, 1 when it does not.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

BUNDLE = Path(__file__).resolve().parent.parent
EXPECTED = "drift/expected.json"
LOCK = "/run/clawhosters-drift.lock"
FAMILIES = {"ipv4": "iptables", "ipv6": "ip6tables"}
PROBES = ("firewall", "fail2ban", "sshd", "containers")
LOOPBACK = ("127.0.0.1", "::1")
# `sshd -T` prints the older name of this value.
SSHD_ALIASES = {"prohibit-password": "without-password"}
MISSING = "(chain missing)"
_SEPARATOR = "@@clawhosters-ip6tables@@"
# In a fresh network namespace: apply the bundle's packet filter, print what the kernel made of it.
_SCRATCH = f'sh "$0" --firewall-only >&2 && iptables-save -t filter && echo {_SEPARATOR} && ip6tables-save -t filter'

Expected = dict[str, Any]
State = dict[str, list[str]]


class Unavailable(Exception):
    """A probe cannot look (its tool is missing): reported, but not counted as drift."""


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=False)


def log(tag: str, message: str) -> None:
    print(f"{tag}: {message}", file=sys.stderr, flush=True)


# --- firewall ---------------------------------------------------------------------------------


def normalise(dump: str, expected: Expected) -> State:
    """What the baseline owns in one family's `iptables-save -t filter`, per aspect, without counters."""
    policies: dict[str, str] = {}
    rules: dict[str, list[str]] = {}
    for line in dump.splitlines():
        if line.startswith(":"):
            name, policy = line[1:].split()[:2]
            policies[name] = policy
            rules.setdefault(name, [])
        elif line.startswith("-A "):
            rules.setdefault(line.split()[1], []).append(line)
    firewall = expected["firewall"]
    state: State = {"INPUT policy": [policies.get("INPUT", MISSING)]}
    for chain in (*firewall["owned_chains"], *firewall["exclusive_chains"]):
        state[f"chain {chain}"] = rules[chain] if chain in policies else [MISSING]
    # fail2ban owns the bans: only the chain's existence is ours.
    state[f"chain {firewall['bans_chain']}"] = ["present" if firewall["bans_chain"] in policies else MISSING]
    for chain, target in firewall["first_hooks"].items():
        hook = f"-A {chain} -j {target}"
        present = rules.get(chain, [])
        state[f"hook {chain} -> {target}"] = [
            f"{present.count(hook)}x",
            "first" if present[:1] == [hook] else "not first",
        ]
    for chain, target in firewall["hooks"].items():
        state[f"hook {chain} -> {target}"] = [f"{rules.get(chain, []).count(f'-A {chain} -j {target}')}x"]
    return state


def _describe(want: list[str], have: list[str]) -> str:
    if have == [MISSING]:
        return "chain is missing"
    if not any(line.startswith("-A ") for line in want + have):
        return f"{' '.join(have)}, expected {' '.join(want)}"
    missing = [line for line in want if line not in have]
    extra = [line for line in have if line not in want]
    text = f"{len(have)} rules, expected {len(want)}"
    if not have:
        text += " (empty)"
    elif not missing and not extra:
        text += " (same rules, another order or count)"
    if missing:
        text += f"; missing {len(missing)}: " + " | ".join(missing[:2]) + (" | ..." if len(missing) > 2 else "")
    if extra:
        text += f"; unexpected {len(extra)}: " + " | ".join(extra[:2]) + (" | ..." if len(extra) > 2 else "")
    return text


def differences(family: str, live: State, wanted: State) -> list[str]:
    return [
        f"{family} {aspect}: {_describe(want, live.get(aspect, [MISSING]))}"
        for aspect, want in wanted.items()
        if live.get(aspect) != want
    ]


def expected_firewall(expected: Expected, bundle: Path) -> dict[str, State]:
    """Both families as apply.sh builds them on a host with nothing else in its packet filter."""
    result = run("unshare", "--net", "--", "sh", "-c", _SCRATCH, str(bundle / "apply.sh"))
    if result.returncode != 0:
        raise Unavailable(f"cannot build the expected ruleset: {result.stderr.strip()}")
    ipv4, ipv6 = result.stdout.split(_SEPARATOR + "\n")
    return {"ipv4": normalise(ipv4, expected), "ipv6": normalise(ipv6, expected)}


def live_firewall(expected: Expected) -> dict[str, State]:
    # A family with no filter table yet prints nothing: every aspect then reads as missing.
    return {
        family: normalise(run(f"{tool}-save", "-t", "filter").stdout, expected) for family, tool in FAMILIES.items()
    }


class Host:
    """The probes and repairs, with their seams (which bundle, which sshd config, which fail2ban socket)."""

    def __init__(self, expected: Expected, bundle: Path, sshd_config: str | None, fail2ban_socket: str | None) -> None:
        self.expected = expected
        self.bundle = bundle
        self.sshd_config = sshd_config
        self.fail2ban = ["fail2ban-client", *(["-s", fail2ban_socket] if fail2ban_socket else [])]
        self._wanted_firewall: dict[str, State] | None = None

    def wanted_firewall(self) -> dict[str, State]:
        if self._wanted_firewall is None:
            self._wanted_firewall = expected_firewall(self.expected, self.bundle)
        return self._wanted_firewall

    def probe_firewall(self) -> list[str]:
        wanted = self.wanted_firewall()
        live = live_firewall(self.expected)
        return [item for family in FAMILIES for item in differences(family, live[family], wanted[family])]

    def repair_firewall(self) -> None:
        result = run("sh", str(self.bundle / "apply.sh"), "--firewall-only")
        if result.returncode != 0:
            log("BASELINE_REPAIR_FAILED", f"apply.sh --firewall-only: {result.stderr.strip()}")
        # apply.sh puts its hooks back but leaves other rules alone; INPUT and OUTPUT are ours alone.
        wanted, live = self.wanted_firewall(), live_firewall(self.expected)
        for family, tool in FAMILIES.items():
            for chain in self.expected["firewall"]["exclusive_chains"]:
                allowed = wanted[family][f"chain {chain}"]
                for line in live[family][f"chain {chain}"]:
                    if line.startswith("-A ") and line not in allowed:
                        run(tool, "-w", "-D", *shlex.split(line)[1:])

    def probe_fail2ban(self) -> list[str]:
        jail = self.expected["fail2ban"]["jail"]
        try:
            if run(*self.fail2ban, "ping").returncode != 0:
                return ["fail2ban is not running"]
        except FileNotFoundError as error:
            raise Unavailable("fail2ban-client is not installed") from error
        if run(*self.fail2ban, "status", jail).returncode != 0:
            return [f"fail2ban jail {jail} is not active"]
        found = []
        for key, want in self.expected["fail2ban"]["settings"].items():
            have = run(*self.fail2ban, "get", jail, key).stdout.strip()
            if have != want:
                found.append(f"fail2ban jail {jail} {key} is {have!r}, expected {want!r}")
        listed = run(*self.fail2ban, "get", jail, "actions").stdout.strip().splitlines()
        actions = sorted(name.strip() for name in listed[-1].split(",")) if len(listed) > 1 else []
        if actions != sorted(self.expected["fail2ban"]["actions"]):
            found.append(f"fail2ban jail {jail} actions are {actions}, expected {self.expected['fail2ban']['actions']}")
        return found

    def restore(self, probe: str) -> None:
        """Put the shipped files of a probe back where they differ from the bundle."""
        for source, target in self.expected["restore"][probe].items():
            shipped = (self.bundle / source).read_bytes()
            with contextlib.suppress(OSError):
                if Path(target).read_bytes() == shipped:
                    continue
            run("install", "-D", "-m", "0644", str(self.bundle / source), target)

    def repair_fail2ban(self) -> None:
        self.restore("fail2ban")
        run("systemctl", "restart", self.expected["units"]["fail2ban"])
        # The unit is started before the server answers: look again only once it does.
        deadline = time.monotonic() + FAIL2BAN_START_SECONDS
        while run(*self.fail2ban, "ping").returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.5)

    def probe_sshd(self) -> list[str]:
        command = ["/usr/sbin/sshd", "-T", *(["-f", self.sshd_config] if self.sshd_config else [])]
        try:
            result = run(*command)
        except FileNotFoundError as error:
            raise Unavailable("sshd is not installed") from error
        if result.returncode != 0:
            return [f"sshd -T fails: {(result.stderr.strip().splitlines() or ['no output'])[-1]}"]
        effective: dict[str, str] = {}
        for line in result.stdout.splitlines():
            key, _, value = line.partition(" ")
            effective.setdefault(key, value)
        found = []
        for key, want in self.expected["sshd"].items():
            have = effective.get(key, "(unset)")
            if SSHD_ALIASES.get(have, have) != SSHD_ALIASES.get(want, want):
                found.append(f"sshd {key} is {have!r}, expected {want!r}")
        return found

    def repair_sshd(self) -> None:
        self.restore("sshd")
        # Debian's unit runs `sshd -t` before a reload or start: a broken configuration is refused there.
        run("systemctl", "reload-or-restart", self.expected["units"]["ssh"])

    def _containers(self) -> list[dict[str, Any]]:
        try:
            listed = run("docker", "ps", "-q")
        except FileNotFoundError as error:
            raise Unavailable("docker is not installed") from error
        if listed.returncode != 0:
            return [{"down": listed.stderr.strip()}]
        ids = listed.stdout.split()
        return json.loads(run("docker", "inspect", *ids).stdout) if ids else []

    def stray_bindings(self, containers: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """(container, binding) for every published port the baseline does not allow."""
        allowed = self.expected["containers"]
        stray = []
        for container in containers:
            name = container["Name"].lstrip("/")
            for spec, bindings in (container["NetworkSettings"]["Ports"] or {}).items():
                for binding in bindings or []:
                    host_ip, host_port = binding["HostIp"], int(binding["HostPort"])
                    gateway = (
                        name == allowed["gateway_container"]
                        and host_port == allowed["gateway_port"]
                        and spec == f"{allowed['gateway_port']}/tcp"
                    )
                    if not gateway and host_ip not in LOOPBACK:
                        stray.append((name, f"{host_ip or '*'}:{host_port} -> {spec}"))
        return stray

    def probe_containers(self) -> list[str]:
        containers = self._containers()
        if containers and "down" in containers[0]:
            return [f"docker is not running ({containers[0]['down']})"]
        return [f"container {name} publishes {binding}" for name, binding in self.stray_bindings(containers)]

    def repair_containers(self) -> None:
        containers = self._containers()
        if containers and "down" in containers[0]:
            run("systemctl", "start", self.expected["units"]["docker"])
            return
        gateway = self.expected["containers"]["gateway_container"]
        for name in sorted({name for name, _ in self.stray_bindings(containers)}):
            if name == gateway:
                # Its unit starts it with the shipped arguments.
                run("systemctl", "restart", self.expected["units"]["gateway"])
            else:
                # A short grace: the port is exposed until the container is down.
                run("docker", "stop", "--time", str(STRAY_STOP_SECONDS), name)

    def probe(self, name: str) -> list[str]:
        probes: dict[str, Callable[[], list[str]]] = {
            "firewall": self.probe_firewall,
            "fail2ban": self.probe_fail2ban,
            "sshd": self.probe_sshd,
            "containers": self.probe_containers,
        }
        return probes[name]()

    def repair(self, name: str) -> None:
        repairs: dict[str, Callable[[], None]] = {
            "firewall": self.repair_firewall,
            "fail2ban": self.repair_fail2ban,
            "sshd": self.repair_sshd,
            "containers": self.repair_containers,
        }
        repairs[name]()


# --- the check --------------------------------------------------------------------------------


def bundle_digest(bundle: Path, paths: list[str]) -> str | None:
    """The digest the program computes for the bundle (its stack output `baseline_digest`)."""
    hasher = hashlib.sha256()
    try:
        for path in sorted(paths, key=PurePosixPath):
            file = bundle / path
            for part in (path.encode(), oct(file.stat().st_mode & 0o777).encode(), file.read_bytes()):
                hasher.update(len(part).to_bytes(8, "big") + part)
    except OSError:
        return None
    return hasher.hexdigest()


def look(host: Host, probes: list[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    drift: dict[str, list[str]] = {}
    notes: dict[str, str] = {}
    for name in probes:
        try:
            drift[name] = host.probe(name)
        except Unavailable as error:
            notes[name] = f"unavailable: {error}"
    return drift, notes


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@contextlib.contextmanager
def _exclusive(path: str) -> Iterator[None]:
    with Path(path).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


FAIL2BAN_START_SECONDS = 30
STRAY_STOP_SECONDS = 3


def _write_status(path: Path, status: dict[str, Any]) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(json.dumps(status, indent=2) + "\n")
    temporary.chmod(0o644)
    temporary.replace(path)


@dataclasses.dataclass
class Outcome:
    result: str  # ok, repaired, unrepaired, or drift (found and left alone: --no-repair)
    found: list[str]
    remaining: list[str]
    notes: dict[str, str]


def check(host: Host, probes: list[str], repair: bool, confirm_seconds: float) -> Outcome:
    drift, notes = look(host, probes)
    if any(drift.values()):
        # Only a difference that lasts counts: Docker briefly rewrites its FORWARD jump.
        time.sleep(confirm_seconds)
        drift, notes = look(host, probes)
    found = [item for items in drift.values() for item in items]
    for item in found:
        log("BASELINE_DRIFT", item)
    if not found:
        return Outcome("ok", [], [], notes)
    if not repair:
        return Outcome("drift", found, found, notes)
    for name, items in drift.items():
        if items:
            host.repair(name)
    after, _ = look(host, [name for name, items in drift.items() if items])
    remaining = [item for items in after.values() for item in items]
    for item in remaining:
        log("BASELINE_UNREPAIRED", item)
    if not remaining:
        log("BASELINE_REPAIRED", f"{len(found)} difference(s)")
    return Outcome("unrepaired" if remaining else "repaired", found, remaining, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="the installed baseline bundle")
    parser.add_argument("--only", default=",".join(PROBES), help=f"comma-separated probes of {','.join(PROBES)}")
    parser.add_argument("--no-repair", action="store_true", help="report differences, change nothing")
    parser.add_argument("--status", type=Path, help="status file (default: the bundle's)")
    parser.add_argument("--sshd-config", help="probe `sshd -T -f FILE` instead of the system's configuration")
    parser.add_argument("--fail2ban-socket", help="talk to the fail2ban server on this socket")
    args = parser.parse_args(argv)
    probes = [name for name in args.only.split(",") if name]
    unknown = sorted(set(probes) - set(PROBES))
    if unknown:
        parser.error(f"--only: unknown probe(s) {', '.join(unknown)}")
    expected: Expected = json.loads((args.bundle / EXPECTED).read_text())
    status_path: Path = args.status or Path(expected["status_file"])
    host = Host(expected, args.bundle, args.sshd_config, args.fail2ban_socket)

    with _exclusive(LOCK):
        previous: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            previous = json.loads(status_path.read_text())
        checked_at = _now()
        outcome = check(host, probes, not args.no_repair, expected["confirm_seconds"])
        last = (
            {"at": checked_at, "what": outcome.found, "result": outcome.result}
            if outcome.found
            else previous.get("last_drift")
        )
        status = {
            "bundle_digest": bundle_digest(args.bundle, expected["bundle_files"]),
            "checked_at": checked_at,
            "result": outcome.result,
            "drift": outcome.found,
            "remaining": outcome.remaining,
            "probes": probes,
            "notes": outcome.notes,
            "last_drift": last,
        }
        _write_status(status_path, status)
    return 0 if outcome.result in ("ok", "repaired") else 1


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())

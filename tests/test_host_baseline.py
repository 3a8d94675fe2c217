"""The rendered host baseline: derived from the policy, accepted by the real tools, idempotent.

The packet-filter tests run the real iptables/ip6tables inside a throwaway network namespace
(root needed, as in CI). The lab (tests/lab) attacks the same files end to end.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.host_baseline import (
    BANS_CHAIN,
    CUSTOMER_KEYS_FILE,
    DOCKER_CHAIN,
    INPUT_CHAIN,
    METADATA_CHAIN,
    OUTPUT_CHAIN,
    RULE_FILES,
    HostSettings,
    main,
    render_host_baseline,
)
from config import BaselinePolicy
from tests.keys import public_key
from tests.netns import Run, network_namespace, ruleset

POLICY = BaselinePolicy()
HOST = HostSettings(provisioner_cidrs=("203.0.113.0/28", "2001:db8:100::/48"))
BUNDLE = render_host_baseline(POLICY, HOST)
FAMILIES = {4: "iptables", 6: "ip6tables"}


def rules(family: int, chain: str) -> list[str]:
    return [line for line in BUNDLE.file(RULE_FILES[family]).content.splitlines() if line.startswith(f"-A {chain} ")]


def ports_of(lines: list[str]) -> set[int]:
    found: set[int] = set()
    for line in lines:
        if match := re.search(r"--dports (\S+)", line):
            found |= {int(port) for port in match.group(1).split(",")}
        elif match := re.search(r"--dport (\d+)", line):
            found.add(int(match.group(1)))
    return found


@pytest.mark.parametrize("family", FAMILIES)
def test_inbound_accepts_exactly_the_open_ports_and_rejects_nothing(family: int) -> None:
    accepted = [line for line in rules(family, INPUT_CHAIN) if line.endswith("-j ACCEPT") and "-p tcp" in line]
    assert ports_of(accepted) == set(POLICY.inbound.open_tcp_ports)
    content = BUNDLE.file(RULE_FILES[family]).content
    rejects = [line for line in content.splitlines() if "REJECT" in line]
    # Refused: blocked egress, and the metadata service (reached from OUTPUT and DOCKER-USER only).
    assert all(line.startswith(("-A CLAW-EGRESS ", f"-A {METADATA_CHAIN} ")) for line in rejects), (
        "inbound must never answer"
    )
    assert not any(f"-j {METADATA_CHAIN}" in line for line in rules(family, INPUT_CHAIN))


@pytest.mark.parametrize("family", FAMILIES)
def test_smtp_and_irc_are_blocked_for_the_host_and_for_containers(family: int) -> None:
    blocked = set(POLICY.egress.blocked_tcp_ports)
    assert ports_of([line for line in rules(family, OUTPUT_CHAIN) if "CLAW-EGRESS" in line]) == blocked
    for interface in ("docker0", "br-+"):
        container = [line for line in rules(family, DOCKER_CHAIN) if f"-i {interface} " in line and "EGRESS" in line]
        assert ports_of(container) == blocked
    egress = rules(family, "CLAW-EGRESS")
    assert f'--log-prefix "{POLICY.egress.log_prefix}"' in egress[0] and "-m limit" in egress[0]
    assert egress[-1].endswith("-j REJECT --reject-with tcp-reset")


@pytest.mark.parametrize("family", FAMILIES)
def test_syn_guard_is_per_source_and_its_log_is_rate_limited(family: int) -> None:
    guard = POLICY.syn_guard
    first, log, drop = rules(family, "CLAW-SYNGUARD")
    prefix = guard.ipv4_source_prefix if family == 4 else guard.ipv6_source_prefix
    assert f"--hashlimit-upto {guard.rate_per_second}/second" in first
    assert f"--hashlimit-burst {guard.burst}" in first
    assert f"--hashlimit-mode srcip --hashlimit-srcmask {prefix}" in first
    assert f'--log-prefix "{guard.log_prefix}"' in log and f"--limit {guard.log_rate_per_minute}/min" in log
    assert drop.endswith("-j DROP")
    for chain in (INPUT_CHAIN, DOCKER_CHAIN):
        assert any("--syn -j CLAW-SYNGUARD" in line for line in rules(family, chain))


@pytest.mark.parametrize("family", FAMILIES)
def test_bans_and_gateway_cover_the_container_path(family: int) -> None:
    docker = rules(family, DOCKER_CHAIN)
    assert docker[0] == f"-A {DOCKER_CHAIN} -j {BANS_CHAIN}"
    assert rules(family, INPUT_CHAIN)[1] == f"-A {INPUT_CHAIN} -j {BANS_CHAIN}"
    dnat = [line for line in docker if "--ctstate DNAT" in line]
    assert dnat == [
        f"-A {DOCKER_CHAIN} -p tcp -m conntrack --ctstate DNAT --ctorigdstport {POLICY.inbound.gateway_port} -j RETURN"
    ]
    assert docker[-1] == f"-A {DOCKER_CHAIN} -j DROP"
    # The established rule comes before the policy flips, so a provisioning session survives.
    established = rules(family, INPUT_CHAIN).index(
        f"-A {INPUT_CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
    )
    assert established <= 2


@pytest.mark.parametrize("family", FAMILIES)
def test_containers_and_non_root_users_cannot_reach_the_metadata_service(family: int) -> None:
    prefix = 32 if family == 4 else 128
    addresses = POLICY.metadata.addresses_of(family)
    assert addresses, "Hetzner serves metadata on both families"
    docker, output = rules(family, DOCKER_CHAIN), rules(family, OUTPUT_CHAIN)
    established = docker.index(f"-A {DOCKER_CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN")
    for address in addresses:
        # Every forwarded packet, whatever bridge it comes from, before established traffic returns.
        refused = docker.index(f"-A {DOCKER_CHAIN} -d {address}/{prefix} -j {METADATA_CHAIN}")
        assert 0 < refused < established
        assert f"-A {OUTPUT_CHAIN} -d {address}/{prefix} -m owner ! --uid-owner 0 -j {METADATA_CHAIN}" in output
    assert rules(family, METADATA_CHAIN) == [
        f"-A {METADATA_CHAIN} -p tcp -j REJECT --reject-with tcp-reset",
        f"-A {METADATA_CHAIN} -j DROP",
    ]


def test_ipv6_keeps_neighbour_discovery_and_router_advertisements() -> None:
    icmpv6 = [line for line in rules(6, INPUT_CHAIN) if "--icmpv6-type" in line]
    for kind in (
        "router-solicitation",
        "router-advertisement",
        "neighbour-solicitation",
        "neighbour-advertisement",
    ):
        assert any(f"--icmpv6-type {kind} -m hl --hl-eq 255 -j ACCEPT" in line for line in icmpv6)
    assert not any("icmp" in line for line in rules(4, INPUT_CHAIN))


def test_fail2ban_jail_follows_the_policy_and_never_bans_provisioners() -> None:
    jail = BUNDLE.file("etc/fail2ban/jail.d/clawhosters.local").content
    policy = POLICY.fail2ban
    assert f"[{policy.jail}]" in jail
    for setting in (
        f"backend = {policy.backend}",
        f"maxretry = {policy.maxretry}",
        f"bantime = {policy.bantime_seconds}",
        f"findtime = {policy.findtime_seconds}",
        "action = clawhosters-drop",
        "ignoreip = 127.0.0.1/8 ::1 203.0.113.0/28 2001:db8:100::/48",
    ):
        assert setting in jail.splitlines()


def test_customer_keys_are_installed_only_when_ssh_is_enabled() -> None:
    key = public_key("ed25519", comment="only-when-enabled")
    path = CUSTOMER_KEYS_FILE.lstrip("/")
    closed = [line for line in BUNDLE.file(path).content.splitlines() if not line.startswith("#")]
    assert closed == []
    opened = render_host_baseline(POLICY, HostSettings(ssh_enabled=True, customer_ssh_keys=(key,)))
    assert key in opened.file(path).content.splitlines()
    assert opened.digest != BUNDLE.digest
    with pytest.raises(ValueError, match="ssh_enabled is false"):
        HostSettings(customer_ssh_keys=(key,))


def test_the_digest_follows_the_policy() -> None:
    changed = POLICY.model_copy(update={"fail2ban": POLICY.fail2ban.model_copy(update={"maxretry": 5})})
    assert render_host_baseline(changed, HOST).digest != BUNDLE.digest
    assert render_host_baseline(POLICY, HOST).digest == BUNDLE.digest


# --- the real tools ---------------------------------------------------------------------------


@pytest.fixture
def netns() -> Iterator[Run]:
    with network_namespace("claw-unit") as run:
        yield run


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    BUNDLE.write_to(tmp_path)
    return tmp_path


@pytest.mark.parametrize("family", FAMILIES)
def test_rule_files_pass_restore_test(netns: Run, family: int) -> None:
    tool = FAMILIES[family]
    netns(tool, "-N", BANS_CHAIN)
    result = netns(f"{tool}-restore", "--test", "--noflush", stdin=BUNDLE.file(RULE_FILES[family]).content, check=False)
    assert result.returncode == 0, result.stderr


def test_apply_is_idempotent_and_keeps_docker_chains_and_bans(netns: Run, bundle_dir: Path) -> None:
    # What a running Docker leaves behind: its own chain, rules in DOCKER-USER and FORWARD.
    for tool in FAMILIES.values():
        netns(tool, "-N", "DOCKER")
        netns(tool, "-N", "DOCKER-USER")
        netns(tool, "-A", "DOCKER-USER", "-j", "RETURN")
        netns(tool, "-A", "FORWARD", "-j", "DOCKER-USER")
        netns(tool, "-A", "FORWARD", "-o", "docker0", "-j", "DOCKER")
    netns("sh", str(bundle_dir / "apply.sh"), "--firewall-only")
    netns("iptables", "-I", BANS_CHAIN, "-s", "198.51.100.66", "-j", "DROP")
    netns("ip6tables", "-I", BANS_CHAIN, "-s", "2001:db8:66::1", "-j", "DROP")
    first = ruleset(netns)
    netns("sh", str(bundle_dir / "apply.sh"), "--firewall-only")
    assert ruleset(netns) == first

    for tool in FAMILIES.values():
        saved = netns(f"{tool}-save", "-t", "filter").stdout
        assert ":INPUT DROP" in saved
        for hook in (
            f"-A INPUT -j {INPUT_CHAIN}",
            f"-A OUTPUT -j {OUTPUT_CHAIN}",
            f"-A DOCKER-USER -j {DOCKER_CHAIN}",
        ):
            assert saved.count(hook + "\n") == 1, hook
        assert "-A FORWARD -o docker0 -j DOCKER" in saved
        assert "-A DOCKER-USER -j RETURN" in saved
        assert saved.count("-A FORWARD -j DOCKER-USER\n") == 1
    assert "-A CLAW-BANS -s 198.51.100.66/32 -j DROP" in first
    assert "-A CLAW-BANS -s 2001:db8:66::1/128 -j DROP" in first


def test_apply_moves_its_hooks_back_to_the_top(netns: Run, bundle_dir: Path) -> None:
    netns("sh", str(bundle_dir / "apply.sh"), "--firewall-only")
    netns("iptables", "-I", "INPUT", "1", "-p", "udp", "-j", "ACCEPT")
    netns("iptables", "-A", "INPUT", "-j", INPUT_CHAIN)
    netns("sh", str(bundle_dir / "apply.sh"), "--firewall-only")
    rules_now = netns("iptables", "-S", "INPUT").stdout.splitlines()
    assert rules_now[1] == f"-A INPUT -j {INPUT_CHAIN}"
    assert rules_now.count(f"-A INPUT -j {INPUT_CHAIN}") == 1


def test_apply_refuses_unknown_options(netns: Run, bundle_dir: Path) -> None:
    result = netns("sh", str(bundle_dir / "apply.sh"), "--firewall", check=False)
    assert result.returncode == 2
    assert "usage" in result.stderr
    assert INPUT_CHAIN not in netns("iptables-save").stdout


def test_fail2ban_accepts_the_jail_and_action(tmp_path: Path, bundle_dir: Path) -> None:
    assert shutil.which("fail2ban-client"), "fail2ban must be installed (setup.sh installs it)"
    config = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", config)
    shutil.copy(bundle_dir / "etc/fail2ban/jail.d/clawhosters.local", config / "jail.d")
    shutil.copy(bundle_dir / "etc/fail2ban/action.d/clawhosters-drop.conf", config / "action.d")
    dump = subprocess.run(
        ["fail2ban-client", "-c", str(config), "-d"], capture_output=True, text=True, check=True
    ).stdout
    jail = POLICY.fail2ban
    assert f"['set', '{jail.jail}', 'maxretry', {jail.maxretry}]" in dump
    assert f"['set', '{jail.jail}', 'bantime', '{jail.bantime_seconds}']" in dump
    assert f"['set', '{jail.jail}', 'findtime', '{jail.findtime_seconds}']" in dump
    assert f"['set', '{jail.jail}', 'addignoreip', '127.0.0.1/8', '::1', '203.0.113.0/28', '2001:db8:100::/48']" in dump
    assert f"['add', '{jail.jail}', '{jail.backend}']" in dump
    assert "-I CLAW-BANS 1 -s <ip> -j DROP" in dump
    assert "['iptables?family=inet6', 'ip6tables']" in dump, "IPv6 bans use ip6tables"


def test_sshd_accepts_the_drop_in_and_refuses_passwords(tmp_path: Path, bundle_dir: Path) -> None:
    host_key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    config = tmp_path / "sshd_config"
    dropin = (bundle_dir / "etc/ssh/sshd_config.d/clawhosters.conf").read_text()
    config.write_text(f"{dropin}HostKey {host_key}\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    effective = subprocess.run(
        ["/usr/sbin/sshd", "-T", "-f", str(config)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for setting in (
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "permitrootlogin without-password",
        f"authorizedkeysfile .ssh/authorized_keys {CUSTOMER_KEYS_FILE}",
    ):
        assert setting in effective


def test_cli_writes_the_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = public_key("ed25519", comment="cli")
    assert (
        main(
            [
                "--out",
                str(tmp_path),
                "--ssh-enabled",
                "--customer-key",
                key,
                "--provisioner-cidr",
                "203.0.113.0/28",
            ]
        )
        == 0
    )
    written = {str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file()}
    expected = render_host_baseline(
        POLICY,
        HostSettings(ssh_enabled=True, customer_ssh_keys=(key,), provisioner_cidrs=("203.0.113.0/28",)),
    )
    assert written == {str(item.path) for item in expected.files}
    assert expected.digest in capsys.readouterr().out
    assert os.access(tmp_path / "apply.sh", os.X_OK)


@pytest.mark.parametrize(
    "arguments,named",
    [
        (["--provisioner-cidr", "203.0.113.7/24"], "--provisioner-cidr"),
        (["--customer-key", "ssh-ed25519 AAAA"], "--customer-key"),
        (["--ssh-enabled"], "--ssh-enabled"),
        (["--ssh-enabled", "--customer-key", public_key(), "--customer-key", public_key()], "repeats key 0"),
    ],
)
def test_cli_names_the_bad_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], named: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--out", str(tmp_path), *arguments])
    assert exited.value.code == 2
    assert named in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing is written on bad input"

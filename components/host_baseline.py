"""The host side of the network baseline: packet filter, fail2ban, sshd and boot persistence.

`render_host_baseline` returns the exact files the baseline command installs in BUNDLE_DIR on the
VPS; `apply.sh` there installs and activates them. The lab applies the same files inside network
namespaces, so what is tested is what is shipped.

    python -m components.host_baseline --out DIR [--ssh-enabled --customer-key KEY...]
                                       [--provisioner-cidr CIDR]...

Packet filter design (IPv4 and IPv6 alike):
- Only our own chains (CLAW-*) are rewritten, with `iptables-restore --noflush`; Docker's chains
  are never flushed. CLAW-BANS belongs to fail2ban and is never rewritten either, so bans survive
  a re-apply.
- INPUT -> CLAW-INPUT, OUTPUT -> CLAW-OUTPUT, DOCKER-USER -> CLAW-DOCKER, each hooked once at the
  top. Published container ports are DNAT-ed through FORWARD, never INPUT, so the container path
  (DOCKER-USER) repeats the bans, the SYN guard and the egress block.
- The INPUT policy becomes DROP only after ESTABLISHED is accepted, so the SSH session that runs
  the apply survives it.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from components.bundle import Bundle, RenderedFile
from components.drift import DRIFT_TIMER, UNIT_FILES, DriftTargets, FirewallTargets, render_drift
from config.customer import Cidr, OpenSshPublicKey, keys_match_ssh, parse_openssh_public_key
from config.policy import BaselinePolicy

BUNDLE_DIR = "/opt/clawhosters/baseline"
FIREWALL_UNIT = "clawhosters-firewall.service"
CUSTOMER_KEYS_FILE = "/etc/clawhosters/ssh/customer_authorized_keys"
BAN_ACTION = "clawhosters-drop"

INPUT_CHAIN = "CLAW-INPUT"
OUTPUT_CHAIN = "CLAW-OUTPUT"
DOCKER_CHAIN = "CLAW-DOCKER"
SYN_GUARD_CHAIN = "CLAW-SYNGUARD"
EGRESS_CHAIN = "CLAW-EGRESS"
BANS_CHAIN = "CLAW-BANS"
METADATA_CHAIN = "CLAW-METADATA"
# Declared (and so rewritten) by the rule files; CLAW-BANS is not: fail2ban fills it.
OWN_CHAINS = (INPUT_CHAIN, OUTPUT_CHAIN, DOCKER_CHAIN, SYN_GUARD_CHAIN, EGRESS_CHAIN, METADATA_CHAIN)
# Interfaces of Docker's bridges: traffic arriving on them comes from containers.
CONTAINER_INTERFACES = ("docker0", "br-+")
MULTIPORT_MAX = 15

Family = Literal[4, 6]
RULE_FILES: dict[Family, str] = {4: "firewall/rules.v4", 6: "firewall/rules.v6"}
# Neighbour discovery and router advertisements: without them IPv6 stops working.
ICMPV6_NEIGHBOUR_DISCOVERY = (
    "router-solicitation",
    "router-advertisement",
    "neighbour-solicitation",
    "neighbour-advertisement",
)


class HostSettings(BaseModel):
    """The per-instance inputs of the host baseline; none of them can weaken the policy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ssh_enabled: bool = False
    customer_ssh_keys: tuple[OpenSshPublicKey, ...] = Field(default=(), validate_default=True)
    provisioner_cidrs: tuple[Cidr, ...] = ()

    @field_validator("customer_ssh_keys")
    @classmethod
    def _keys_need_ssh(cls, keys: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        return keys_match_ssh(keys, info.data.get("ssh_enabled", False))


def _chunks(ports: tuple[int, ...]) -> list[str]:
    return [
        ",".join(str(port) for port in ports[start : start + MULTIPORT_MAX])
        for start in range(0, len(ports), MULTIPORT_MAX)
    ]


def _rules(policy: BaselinePolicy, family: Family) -> str:
    guard, egress = policy.syn_guard, policy.egress
    prefix = guard.ipv4_source_prefix if family == 4 else guard.ipv6_source_prefix
    syn_log = f"-m limit --limit {guard.log_rate_per_minute}/min --limit-burst {guard.log_burst}"
    egress_log = f"-m limit --limit {egress.log_rate_per_minute}/min --limit-burst {egress.log_burst}"
    blocked = [f"-p tcp -m multiport --dports {ports}" for ports in _chunks(egress.blocked_tcp_ports)]
    icmp = "icmp" if family == 4 else "ipv6-icmp"
    metadata = policy.metadata.addresses_of(family)
    host_prefix = 32 if family == 4 else 128

    lines = ["*filter", *(f":{chain} - [0:0]" for chain in OWN_CHAINS)]
    add = lines.append

    # Inbound to the host.
    add(f"-A {INPUT_CHAIN} -i lo -j ACCEPT")
    add(f"-A {INPUT_CHAIN} -j {BANS_CHAIN}")
    add(f"-A {INPUT_CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
    add(f"-A {INPUT_CHAIN} -m conntrack --ctstate INVALID -j DROP")
    if family == 6:
        for icmpv6_type in ICMPV6_NEIGHBOUR_DISCOVERY:
            add(f"-A {INPUT_CHAIN} -p {icmp} --icmpv6-type {icmpv6_type} -m hl --hl-eq 255 -j ACCEPT")
    add(f"-A {INPUT_CHAIN} -p tcp --syn -j {SYN_GUARD_CHAIN}")
    for port in policy.inbound.open_tcp_ports:
        add(f"-A {INPUT_CHAIN} -p tcp --dport {port} -m conntrack --ctstate NEW -j ACCEPT")
    # Anything else falls to the INPUT policy, DROP: no reset, no ICMP, no reply at all.

    # New inbound SYNs: a per-source budget, so one flooding source cannot starve the others.
    add(
        f"-A {SYN_GUARD_CHAIN} -m hashlimit --hashlimit-upto {guard.rate_per_second}/second "
        f"--hashlimit-burst {guard.burst} --hashlimit-mode srcip --hashlimit-srcmask {prefix} "
        f"--hashlimit-name claw-syn{family} -j RETURN"
    )
    add(f'-A {SYN_GUARD_CHAIN} {syn_log} -j LOG --log-prefix "{guard.log_prefix}"')
    add(f"-A {SYN_GUARD_CHAIN} -j DROP")

    # Blocked egress is refused at once and logged, rate-limited.
    add(f'-A {EGRESS_CHAIN} {egress_log} -j LOG --log-prefix "{egress.log_prefix}"')
    add(f"-A {EGRESS_CHAIN} -p tcp -j REJECT --reject-with tcp-reset")

    # The metadata service: refused at once over tcp (an ICMP error for a locally sent packet to
    # an IPv6 link-local address never reaches the sender; a reset does), dropped otherwise.
    add(f"-A {METADATA_CHAIN} -p tcp -j REJECT --reject-with tcp-reset")
    add(f"-A {METADATA_CHAIN} -j DROP")

    # Outbound from the host. The metadata service (user_data with the host's private key) is
    # root's alone: cloud-init needs it at boot, no other local user does.
    add(f"-A {OUTPUT_CHAIN} -o lo -j RETURN")
    for address in metadata:
        add(f"-A {OUTPUT_CHAIN} -d {address}/{host_prefix} -m owner ! --uid-owner 0 -j {METADATA_CHAIN}")
    for match in blocked:
        add(f"-A {OUTPUT_CHAIN} {match} -j {EGRESS_CHAIN}")

    # Containers (FORWARD via DOCKER-USER): bans, the metadata service (before ESTABLISHED, so
    # not even a connection older than the rule survives), their egress, then new connections
    # from outside.
    add(f"-A {DOCKER_CHAIN} -j {BANS_CHAIN}")
    for address in metadata:
        add(f"-A {DOCKER_CHAIN} -d {address}/{host_prefix} -j {METADATA_CHAIN}")
    add(f"-A {DOCKER_CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN")
    for interface in CONTAINER_INTERFACES:
        for match in blocked:
            add(f"-A {DOCKER_CHAIN} -i {interface} {match} -j {EGRESS_CHAIN}")
        add(f"-A {DOCKER_CHAIN} -i {interface} -j RETURN")
    add(f"-A {DOCKER_CHAIN} -p tcp --syn -j {SYN_GUARD_CHAIN}")
    add(f"-A {DOCKER_CHAIN} -p tcp -m conntrack --ctstate DNAT --ctorigdstport {policy.inbound.gateway_port} -j RETURN")
    # Nothing else from outside reaches a container, even when routed straight to a bridge address.
    add(f"-A {DOCKER_CHAIN} -j DROP")
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _jail(policy: BaselinePolicy, host: HostSettings) -> str:
    jail = policy.fail2ban
    ignore = " ".join(["127.0.0.1/8", "::1", *host.provisioner_cidrs])
    return f"""# Installed by the clawhosters baseline; overrides Debian's defaults for this jail.
[{jail.jail}]
enabled = true
# aggressive: also count key-only and pre-authentication failures (passwords are off).
filter = sshd[mode=aggressive]
backend = {jail.backend}
# Debian's unit is ssh.service, not the stock filter's sshd.service, and journald leaves _COMM off
# lines whose short-lived sshd process has already exited: match on what sshd itself sends.
journalmatch = _TRANSPORT=syslog SYSLOG_IDENTIFIER=sshd
maxretry = {jail.maxretry}
findtime = {jail.findtime_seconds}
bantime = {jail.bantime_seconds}
# The ban drops the source on every port, the gateway's container path included.
action = {BAN_ACTION}
# Local and provisioning sources are never banned, or an apply could lock itself out.
ignoreip = {ignore}
"""


def _ban_action() -> str:
    # One action for both families; fail2ban picks the [Init?family=inet6] values for IPv6.
    rule = f"{BANS_CHAIN} -s <ip> -j DROP"
    return f"""# Bans into {BANS_CHAIN}, which the baseline hooks into INPUT and DOCKER-USER alike.
[Definition]
actionstart = <iptables> -w -N {BANS_CHAIN} 2>/dev/null || true
actionstop = <iptables> -w -F {BANS_CHAIN}
actioncheck = <iptables> -w -n -L {BANS_CHAIN} >/dev/null
actionban = <iptables> -w -C {rule} 2>/dev/null || <iptables> -w -I {rule.replace(" ", " 1 ", 1)}
actionunban = <iptables> -w -D {rule}

[Init]
iptables = iptables

[Init?family=inet6]
iptables = ip6tables
"""


def _sshd_dropin() -> str:
    # sshd takes the first value it reads, and Debian includes sshd_config.d/ first.
    return f"""# Installed by the clawhosters baseline.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PermitEmptyPasswords no
# The platform's provisioning key lives in root's own file; the customer's keys, only when the
# customer enabled SSH, in a file of their own.
AuthorizedKeysFile .ssh/authorized_keys {CUSTOMER_KEYS_FILE}
"""


def _customer_keys(host: HostSettings) -> str:
    header = "# Customer SSH keys, installed by the clawhosters baseline. Empty: SSH not enabled.\n"
    return header + "".join(f"{key}\n" for key in host.customer_ssh_keys)


def _firewall_unit() -> str:
    return f"""[Unit]
Description=clawhosters network baseline (iptables and ip6tables)
DefaultDependencies=no
After=local-fs.target
Before=network-pre.target docker.service ssh.service fail2ban.service shutdown.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh {BUNDLE_DIR}/apply.sh --firewall-only
# A reload re-asserts the packet filter. Unlike a restart, it does not restart the units that
# require this one (docker, fail2ban, the gateway).
ExecReload=/bin/sh {BUNDLE_DIR}/apply.sh --firewall-only

[Install]
WantedBy=multi-user.target
"""


# Docker and fail2ban start only once the baseline is active.
_REQUIRES_FIREWALL = f"""[Unit]
Requires={FIREWALL_UNIT}
After={FIREWALL_UNIT}
"""


_APPLY = f"""#!/bin/sh
# clawhosters network baseline. Usage: apply.sh [--firewall-only]
#   --firewall-only  load the packet filter only (iptables and ip6tables): no installs, no service
#                    restarts; safe with or without Docker running; idempotent.
#   (no option)      install every file of this bundle, then activate the firewall, fail2ban and sshd.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
case "${{1:-}}" in
  --firewall-only) mode=firewall ;;
  "") mode=full ;;
  *) echo "usage: $0 [--firewall-only]" >&2; exit 2 ;;
esac

# Put "-j TARGET" exactly once at the top of CHAIN; leave it alone when it already is.
hook() {{
  ipt=$1 chain=$2 target=$3
  rules=$($ipt -w -S "$chain")
  count=$(printf '%s\\n' "$rules" | grep -c -x -- "-A $chain -j $target" || true)
  first=$(printf '%s\\n' "$rules" | sed -n 2p)
  if [ "$count" = 1 ] && [ "$first" = "-A $chain -j $target" ]; then
    return 0
  fi
  while $ipt -w -D "$chain" -j "$target" 2>/dev/null; do :; done
  $ipt -w -I "$chain" 1 -j "$target"
}}

apply_family() {{
  ipt=$1 rules=$2
  # Docker creates DOCKER-USER when it starts; at boot the baseline comes first.
  $ipt -w -N DOCKER-USER 2>/dev/null || true
  $ipt -w -N {BANS_CHAIN} 2>/dev/null || true
  # --noflush: only the chains the file declares are rewritten, in one transaction.
  "$ipt-restore" -w --noflush < "$rules"
  hook "$ipt" INPUT {INPUT_CHAIN}
  hook "$ipt" OUTPUT {OUTPUT_CHAIN}
  hook "$ipt" DOCKER-USER {DOCKER_CHAIN}
  $ipt -w -C FORWARD -j DOCKER-USER 2>/dev/null || $ipt -w -I FORWARD 1 -j DOCKER-USER
  # Last: established traffic (this SSH session) is already accepted above.
  $ipt -w -P INPUT DROP
}}

apply_firewall() {{
  apply_family iptables "$here/{RULE_FILES[4]}"
  apply_family ip6tables "$here/{RULE_FILES[6]}"
}}

if [ "$mode" = firewall ]; then
  apply_firewall
  exit 0
fi

install -d -m 0755 /etc/clawhosters/ssh /etc/fail2ban/jail.d /etc/fail2ban/action.d \\
  /etc/ssh/sshd_config.d /etc/systemd/system/docker.service.d /etc/systemd/system/fail2ban.service.d
for file in etc/fail2ban/jail.d/clawhosters.local etc/fail2ban/action.d/{BAN_ACTION}.conf \\
  etc/clawhosters/ssh/customer_authorized_keys etc/systemd/system/{FIREWALL_UNIT} \\
  etc/systemd/system/docker.service.d/clawhosters.conf \\
  etc/systemd/system/fail2ban.service.d/clawhosters.conf; do
  install -m 0644 "$here/$file" "/$file"
done

# Drift check: a timer compares the host with this bundle and re-asserts the baseline.
for file in {UNIT_FILES[0]} {UNIT_FILES[1]}; do
  install -m 0644 "$here/$file" "/$file"
done
systemctl daemon-reload
systemctl enable {DRIFT_TIMER}
systemctl restart {DRIFT_TIMER}

# sshd: validate before it takes effect; on a bad config keep the previous drop-in.
dropin=/etc/ssh/sshd_config.d/clawhosters.conf
[ -f "$dropin" ] && cp -p "$dropin" "$dropin.previous"
install -m 0644 "$here/$dropin" "$dropin"
if ! sshd -t; then
  if [ -f "$dropin.previous" ]; then mv "$dropin.previous" "$dropin"; else rm -f "$dropin"; fi
  echo "sshd rejected the baseline drop-in; previous configuration kept" >&2
  exit 1
fi
rm -f "$dropin.previous"

systemctl daemon-reload
systemctl enable {FIREWALL_UNIT} fail2ban.service
# Never `restart` these: docker, fail2ban and the gateway require the firewall unit, and systemd
# restarts every unit that requires a restarted one. A reload keeps them, and fail2ban its bans;
# the first time, reload-or-restart starts the unit.
systemctl reload-or-restart {FIREWALL_UNIT}
systemctl reload-or-restart fail2ban.service
systemctl reload ssh.service
"""


SSHD_DROPIN = "etc/ssh/sshd_config.d/clawhosters.conf"
JAIL_FILE = "etc/fail2ban/jail.d/clawhosters.local"
BAN_ACTION_FILE = f"etc/fail2ban/action.d/{BAN_ACTION}.conf"
# What the drift check compares and restores.
DRIFT_TARGETS = DriftTargets(
    bundle_dir=BUNDLE_DIR,
    firewall_unit=FIREWALL_UNIT,
    firewall=FirewallTargets(
        owned_chains=OWN_CHAINS,
        bans_chain=BANS_CHAIN,
        exclusive_chains=("INPUT", "OUTPUT"),
        first_hooks={"DOCKER-USER": DOCKER_CHAIN},
        hooks={"FORWARD": "DOCKER-USER"},
    ),
    ban_action=BAN_ACTION,
    sshd_dropin=SSHD_DROPIN,
    restore={"fail2ban": (JAIL_FILE, BAN_ACTION_FILE), "sshd": (SSHD_DROPIN,)},
)


def render_host_baseline(policy: BaselinePolicy, host: HostSettings) -> Bundle:
    files = (
        RenderedFile(path="apply.sh", content=_APPLY, mode=0o755),
        RenderedFile(path=RULE_FILES[4], content=_rules(policy, 4)),
        RenderedFile(path=RULE_FILES[6], content=_rules(policy, 6)),
        RenderedFile(path=JAIL_FILE, content=_jail(policy, host)),
        RenderedFile(path=BAN_ACTION_FILE, content=_ban_action()),
        RenderedFile(path=SSHD_DROPIN, content=_sshd_dropin()),
        RenderedFile(path=CUSTOMER_KEYS_FILE.lstrip("/"), content=_customer_keys(host)),
        RenderedFile(path=f"etc/systemd/system/{FIREWALL_UNIT}", content=_firewall_unit()),
        RenderedFile(path="etc/systemd/system/docker.service.d/clawhosters.conf", content=_REQUIRES_FIREWALL),
        RenderedFile(path="etc/systemd/system/fail2ban.service.d/clawhosters.conf", content=_REQUIRES_FIREWALL),
    )
    return Bundle(files=files + render_drift(policy, DRIFT_TARGETS, files))


def _cidr_argument(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{value!r} is not a network in CIDR notation") from error


def _key_argument(value: str) -> str:
    try:
        return parse_openssh_public_key(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m components.host_baseline",
        description="Write the host baseline files (and apply.sh) that the baseline command installs.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory to write the bundle into")
    parser.add_argument("--ssh-enabled", action="store_true", help="the customer enabled SSH")
    parser.add_argument(
        "--customer-key", action="append", default=[], type=_key_argument, help="customer OpenSSH public key"
    )
    parser.add_argument("--provisioner-cidr", action="append", default=[], type=_cidr_argument, help="never banned")
    args = parser.parse_args(argv)
    try:
        host = HostSettings(
            ssh_enabled=args.ssh_enabled,
            customer_ssh_keys=tuple(args.customer_key),
            provisioner_cidrs=tuple(args.provisioner_cidr),
        )
    except ValidationError as error:
        parser.error("; ".join(f"--customer-key/--ssh-enabled: {e['msg']}" for e in error.errors()))
    bundle = render_host_baseline(BaselinePolicy(), host)
    bundle.write_to(args.out)
    print(f"wrote {len(bundle.files)} files to {args.out} (digest {bundle.digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

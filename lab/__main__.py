"""`python -m lab up` deploys an emulated customer instance; `python -m lab down` removes it."""

from __future__ import annotations

import argparse
import sys

from components.gateway import GATEWAY_USER
from lab.machine import MachineError
from lab.topology import ATTACKER, CLIENT, PROVISIONER, VPS, VPS_PEER
from lab.world import Lab, LabError, down


def _describe(lab: Lab) -> str:
    port = lab.policy.inbound.gateway_port
    password = lab.state_dir / "gateway.password"
    return f"""The customer instance is deployed on a booted Debian 12 machine (network namespace {VPS}).

  gateway (IPv4)  http://{VPS_PEER.ipv4}:{port}/
  gateway (IPv6)  http://[{VPS_PEER.ipv6}]:{port}/
  credentials     {GATEWAY_USER} / the password in {password}

Try it from the emulated internet:
  sudo ip netns exec {CLIENT.namespace} \\
      curl -u {GATEWAY_USER}:"$(sudo cat {password})" http://{VPS_PEER.ipv4}:{port}/
  sudo ip netns exec {ATTACKER.namespace} nmap -Pn -p 1-1024,9090 --max-rate 25 {VPS_PEER.ipv4}
  sudo ip netns exec {PROVISIONER.namespace} ssh -i {lab.provisioning_key} root@{VPS_PEER.ipv4}
Inside the machine (from the provisioner's SSH session above): iptables-save, fail2ban-client status sshd,
  docker ps, journalctl -b.

Remove it with: sudo .venv/bin/python -m lab down"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    parser.add_argument("action", choices=("up", "down"))
    args = parser.parse_args(argv)
    try:
        if args.action == "down":
            down()
            print("lab removed")
            return 0
        lab = Lab()
        for step in lab.up():
            print(f"{step.name:<32} {step.action:<10} {step.seconds:6.1f} s")
        password = lab.state_dir / "gateway.password"
        password.touch(mode=0o600)
        password.write_text(lab.password + "\n")
        print(_describe(lab))
        return 0
    except (LabError, MachineError) as error:
        print(f"lab: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

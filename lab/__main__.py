"""`python -m lab up`: `pulumi up` of a customer stack on the lab's Hetzner Cloud; `python -m lab down`:
`pulumi destroy` of it, then everything the lab started is removed."""

from __future__ import annotations

import argparse
import sys

from components.gateway import GATEWAY_USER
from fleet.failures import StackOperationFailed, describe
from lab.machine import MachineError
from lab.topology import ATTACKER, CLIENT, PROVISIONER
from lab.world import HETZNER_PORT, STACK, Lab, LabError, down


def _describe(lab: Lab) -> str:
    port = lab.policy.inbound.gateway_port
    password = lab.state_dir / "gateway.password"
    return f"""Stack {STACK} is up: Hetzner server {lab.server_id}, a booted Debian 12 machine
(network namespace {lab.namespace}).

  gateway (IPv4)  http://{lab.ipv4}:{port}/
  gateway (IPv6)  http://[{lab.ipv6}]:{port}/
  credentials     {GATEWAY_USER} / the password in {password}

Try it from the emulated internet:
  sudo ip netns exec {CLIENT.namespace} \\
      curl -u {GATEWAY_USER}:"$(sudo cat {password})" http://{lab.ipv4}:{port}/
  sudo ip netns exec {ATTACKER.namespace} nmap -Pn -p 1-1024,9090 --max-rate 25 {lab.ipv4}
  sudo ip netns exec {PROVISIONER.namespace} ssh -i {lab.provisioning_key} root@{lab.ipv4}
Inside the machine (from the provisioner's SSH session above): iptables-save, fail2ban-client status sshd,
  docker ps, journalctl -b.
The stack with the real CLI, as the lab runs it (in the provisioner's namespace):
  sudo sh -c 'set -a; . {lab.state_dir}/env; cd {lab.state_dir}/stacks/{STACK}; {lab.state_dir}/cli/bin/pulumi preview'
Hetzner's API: {lab.hetzner_endpoint} (token in {lab.state_dir}/hetzner.token), requests per token at
  http://127.0.0.1:{HETZNER_PORT}/_lab/requests

Remove it with: sudo .venv/bin/python -m lab down"""


def _destroyed(lab: Lab) -> bool:
    """Cancel the lab's customer (decommission, destroy); say so, or why not: the lab goes either way."""
    try:
        lab.destroy()
    except Exception as error:
        said = error if isinstance(error, StackOperationFailed) else f"lab: pulumi destroy failed: {describe(error)}"
        print(f"{said}\nlab: removing everything anyway", file=sys.stderr)
        return False
    print(f"stack {STACK} destroyed")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    parser.add_argument("action", choices=("up", "down"))
    args = parser.parse_args(argv)
    try:
        lab = Lab()
        if args.action == "down":
            failed = lab.deployed() and not _destroyed(lab)
            down()
            print("lab removed")
            return 1 if failed else 0
        for step in lab.up():
            print(f"{step.name:<40} {step.action:<10} {step.seconds:6.1f} s")
        password = lab.state_dir / "gateway.password"
        password.touch(mode=0o600)
        password.write_text(lab.password + "\n")
        print(_describe(lab))
        return 0
    except StackOperationFailed as error:
        print(error, file=sys.stderr)
        return 1
    except (LabError, MachineError) as error:
        print(f"lab: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

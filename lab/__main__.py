"""`python -m lab up` starts an emulated customer instance; `python -m lab down` removes it."""

from __future__ import annotations

import argparse
import sys

from components.gateway import GATEWAY_USER
from lab.topology import ATTACKER, CLIENT, PROVISIONER, VPS, VPS_PEER
from lab.world import Lab, LabError, down


def _describe(lab: Lab) -> str:
    port = lab.policy.inbound.gateway_port
    return f"""The emulated customer instance is up (network namespace {VPS}).

  gateway (IPv4)  http://{VPS_PEER.ipv4}:{port}/
  gateway (IPv6)  http://[{VPS_PEER.ipv6}]:{port}/
  credentials     {GATEWAY_USER} / the password in {lab.state_dir / "gateway.password"}

Try it from the emulated internet:
  sudo ip netns exec {CLIENT.namespace} \\
      curl -u {GATEWAY_USER}:"$(sudo cat {lab.state_dir / "gateway.password"})" http://{VPS_PEER.ipv4}:{port}/
  sudo ip netns exec {ATTACKER.namespace} nmap -Pn -p 1-1024,9090 --max-rate 25 {VPS_PEER.ipv4}
  sudo ip netns exec {PROVISIONER.namespace} ssh -i {lab.provisioning_key} root@{VPS_PEER.ipv4}
Inside the VPS:
  sudo ip netns exec {VPS} iptables-save
  sudo fail2ban-client -c {lab.fail2ban_dir} status sshd
  sudo docker -H unix://{lab.docker_socket} ps

Remove it with: sudo python -m lab down"""


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
        lab.up()
        print(_describe(lab))
        return 0
    except LabError as error:
        print(f"lab: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

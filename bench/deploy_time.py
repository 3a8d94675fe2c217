"""Deploy time: from `hcloud.Server` created (a stock Debian 12 machine starting to boot) to a
gateway that serves, per remote command, on the lab's booted machine (root needed).

The apt mirror and the registry are on the lab's internet, so downloads take no time that a real
mirror would add: the figures are what the machine itself spends. The image build (debootstrap,
cached per package list) is not counted.

    python -m bench.deploy_time [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bench.common import spread, table, write_section
from lab.machine import ensure_image
from lab.topology import CLIENT, VPS_PEER
from lab.world import Lab, down


def _deploy_once() -> dict[str, float]:
    lab = Lab()
    try:
        lab.up(deploy=False)
        started = time.monotonic()
        steps = lab.deploy()
        port = lab.policy.inbound.gateway_port
        while lab.http_status(VPS_PEER.ipv4, port, CLIENT.namespace, auth=True) != 200:
            if time.monotonic() - started > 600:
                raise RuntimeError("the gateway did not serve within 10 minutes")
            time.sleep(0.2)
        figures = {step.name.removeprefix("customer-lab-"): step.seconds for step in steps}
        figures["server create to gateway serving"] = time.monotonic() - started
        return figures
    finally:
        down(lab.state_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.deploy_time")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("needs root (it builds the lab)")
    ensure_image()
    runs = [_deploy_once() for _ in range(args.repeat)]
    rows = [[name, spread([run[name] for run in runs], " s", 1)] for name in runs[0]]
    body = (
        "A new customer stack on the lab's stock Debian 12 machine: each remote command as the provider "
        "runs it (the first includes sshd coming up and cloud-init finishing), then the time from "
        "`hcloud.Server` (the lab copying the image and starting the machine, where Hetzner would create the "
        f"server) until the gateway answers 200 from the internet. {args.repeat} runs, median [min, max].\n\n"
        + table(["step", "seconds"], rows)
    )
    print(write_section("Deploy time", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())

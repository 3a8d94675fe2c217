"""Deploy time: a customer stack's first `pulumi up` through the real CLI and providers on the lab's
Hetzner Cloud, per resource, and from the start of the `up` until the gateway serves (root needed).

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
from lab.topology import CLIENT
from lab.world import Lab, down


def _deploy_once() -> dict[str, float]:
    lab = Lab()
    try:
        lab.up(deploy=False)
        started = time.monotonic()
        steps = lab.deploy()
        port = lab.policy.inbound.gateway_port
        while lab.http_status(lab.ipv4, port, CLIENT.namespace, auth=True) != 200:
            if time.monotonic() - started > 600:
                raise RuntimeError("the gateway did not serve within 10 minutes")
            time.sleep(0.2)
        figures = {step.name.removeprefix("customer-lab-"): step.seconds for step in steps}
        figures["pulumi up (preview, plan, up) to gateway serving"] = time.monotonic() - started
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
        "A new customer stack's first `pulumi up` on the lab's Hetzner Cloud: each resource from the "
        "engine's first event to its outputs (the server: the emulator's create action, the machine's "
        "disk copied and booting; the first command includes sshd coming up and cloud-init finishing), "
        "then the whole operation, the gated preview included, until the gateway answers 200 from the "
        f"internet. {args.repeat} runs, median [min, max].\n\n" + table(["step", "seconds"], rows)
    )
    print(write_section("Deploy time", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How the cost of building the resource graph grows with the number of CustomerInstances.

Each measurement runs in a fresh process: N instances are declared in one Pulumi program under
the SDK's mocks (the engine's part excluded), and the process reports the wall time from the
first declaration until every registration has resolved, and its peak resident memory.

    python -m bench.program_scale [--sizes 1 10 100 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

SIZES = (1, 10, 100, 1000)
IMAGE = "ghcr.io/openclaw/gateway:1.4.2@sha256:" + "ab" * 32


def _child(count: int) -> dict[str, float]:
    import pulumi

    from components.instance import CustomerInstance
    from components.offline import StandInMocks
    from config import CustomerConfig, StackSettings

    pulumi.runtime.set_mocks(StandInMocks(), project="clawhosters", stack="bench", preview=False)
    settings = [
        StackSettings(customer=CustomerConfig(customer_id=f"c{index:04d}", gateway_image=IMAGE))
        for index in range(count)
    ]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()

    @pulumi.runtime.test
    def declare() -> pulumi.Output[list[str]]:
        instances = [CustomerInstance(s.customer.stack_name, s) for s in settings]
        return pulumi.Output.all(*(instance.gateway_url for instance in instances))

    declare()
    elapsed = time.perf_counter() - started
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": elapsed,
        "peak_rss_mib": rss_after / 1024,
        "rss_growth_mib": (rss_after - rss_before) / 1024,
    }


def _measure(count: int) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.program_scale", "--child", str(count)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    from bench.common import spread, table, write_section

    parser = argparse.ArgumentParser(prog="python -m bench.program_scale")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(args.child)))
        return 0

    rows = []
    for count in args.sizes:
        runs = [_measure(count) for _ in range(args.repeat)]
        seconds = [run["seconds"] for run in runs]
        rows.append(
            [
                str(count),
                spread(seconds, " s"),
                spread([1000 * s / count for s in seconds], " ms", 1),
                spread([run["peak_rss_mib"] for run in runs], " MiB", 0),
                spread([run["rss_growth_mib"] for run in runs], " MiB", 0),
            ]
        )
    body = (
        f"Declaring N customer instances in one program under Pulumi's mocks; {args.repeat} fresh processes "
        "per size, median [min, max].\n\n"
        + table(["instances", "graph build time", "per instance", "peak RSS", "RSS growth while building"], rows)
    )
    print(write_section("Program scale", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())

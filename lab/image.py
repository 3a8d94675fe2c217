"""A stand-in for the OpenClaw Gateway image, built locally (no registry is reachable): Debian's
static busybox serving the gateway port behind HTTP basic auth, with the credentials taken from
the same environment variables as the real gateway, and an unauthenticated metrics listener."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from components.gateway import GATEWAY_PASSWORD_ENV, GATEWAY_USER_ENV
from config import BaselinePolicy

IMAGE = "clawhosters/gateway-standin:lab"
BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "httpd", "nc", "mkdir", "printf", "echo", "cat", "sleep", "wget")


def _entrypoint(policy: BaselinePolicy) -> str:
    return f"""#!/bin/sh
set -eu
mkdir -p /www /metrics
echo 'OpenClaw Gateway (lab stand-in)' > /www/index.html
echo 'openclaw_gateway_up 1' > /metrics/index.html
printf '/:%s:%s\\n' "${GATEWAY_USER_ENV}" "${GATEWAY_PASSWORD_ENV}" > /etc/httpd.conf
: > /etc/metrics.conf
httpd -p {policy.inbound.metrics_port} -h /metrics -c /etc/metrics.conf
exec httpd -f -p {policy.inbound.gateway_port} -h /www -c /etc/httpd.conf
"""


def build_image(rootfs: Path, docker_socket: Path) -> None:
    policy = BaselinePolicy()
    if rootfs.exists():
        shutil.rmtree(rootfs)
    for directory in ("bin", "etc", "tmp"):
        (rootfs / directory).mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin/busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    entrypoint = rootfs / "entrypoint.sh"
    entrypoint.write_text(_entrypoint(policy))
    entrypoint.chmod(0o755)
    archive = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True).stdout
    subprocess.run(
        [
            "docker",
            "-H",
            f"unix://{docker_socket}",
            "import",
            "-c",
            'ENTRYPOINT ["/entrypoint.sh"]',
            "-",
            IMAGE,
        ],
        input=archive,
        capture_output=True,
        check=True,
    )

"""The OpenClaw Gateway container: a systemd unit around `docker run` that publishes only the
gateway port, with metrics bound to the VPS's loopback.

systemd owns the container's life (restart policy, boot order after the firewall unit), so the
baseline is always active before the gateway starts.
"""

from __future__ import annotations

from components.bundle import Bundle, RenderedFile
from config.policy import BaselinePolicy

GATEWAY_DIR = "/opt/clawhosters/gateway"
ENV_FILE = "/etc/clawhosters/gateway.env"
UNIT_NAME = "clawhosters-gateway.service"
START_TIMEOUT_SECONDS = 120
FIREWALL_UNIT = "clawhosters-firewall.service"
CONTAINER_NAME = "openclaw-gateway"
# The gateway keeps its state in /data; the host directory outlives every container.
DATA_DIR = "/var/lib/openclaw-gateway"
CONTAINER_DATA_DIR = "/data"
GATEWAY_USER = "admin"
# The container's contract: it reads its basic-auth credentials from these variables.
GATEWAY_USER_ENV = "OPENCLAW_GATEWAY_USER"
GATEWAY_PASSWORD_ENV = "OPENCLAW_GATEWAY_PASSWORD"  # noqa: S105 (a variable name)


def gateway_run_args(policy: BaselinePolicy, image: str, env_file: str = ENV_FILE) -> list[str]:
    """The `docker` arguments that start the gateway: only the gateway port is published."""
    gateway = policy.inbound.gateway_port
    metrics = policy.inbound.metrics_port
    return [
        "run",
        "--rm",
        "--name",
        CONTAINER_NAME,
        "--env-file",
        env_file,
        "--publish",
        f"{gateway}:{gateway}",
        "--publish",
        f"127.0.0.1:{metrics}:{metrics}",
        "--volume",
        f"{DATA_DIR}:{CONTAINER_DATA_DIR}",
        "--security-opt",
        "no-new-privileges",
        image,
    ]


def _unit(policy: BaselinePolicy, image: str) -> str:
    run = " ".join(gateway_run_args(policy, image))
    return f"""[Unit]
Description=OpenClaw Gateway ({image})
Requires=docker.service {FIREWALL_UNIT}
After=docker.service {FIREWALL_UNIT}

[Service]
ExecStartPre=-/usr/bin/docker rm --force {CONTAINER_NAME}
ExecStart=/usr/bin/docker {run}
ExecStop=/usr/bin/docker stop {CONTAINER_NAME}
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


def _install(policy: BaselinePolicy) -> str:
    return f"""#!/bin/sh
# Usage: install.sh IMAGE < password. Installs and (re)starts the gateway.
# The password arrives on standard input: never in the command text, and not as an SSH
# environment request, which sshd refuses for any name outside its AcceptEnv list.
set -eu
image="$1"
IFS= read -r password || true
if [ -z "$password" ]; then
  echo "install.sh: the gateway password must arrive on standard input" >&2
  exit 1
fi
# The baseline comes first; only then may Docker run (the packages step left it stopped).
systemctl is-active --quiet {FIREWALL_UNIT}
systemctl start docker.service
umask 077
mkdir -p "$(dirname {ENV_FILE})" {DATA_DIR}
printf '%s=%s\\n%s=%s\\n' {GATEWAY_USER_ENV} {GATEWAY_USER} {GATEWAY_PASSWORD_ENV} "$password" > {ENV_FILE}.new
mv {ENV_FILE}.new {ENV_FILE}
docker pull "$image"
install -m 0644 gateway.service /etc/systemd/system/{UNIT_NAME}
systemctl daemon-reload
systemctl enable {UNIT_NAME}
systemctl restart {UNIT_NAME}
# The step (and `pulumi up`) succeeds only once the gateway answers HTTP on the VPS itself.
url=http://127.0.0.1:{policy.inbound.gateway_port}/
waited=0
until [ "$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 2 "$url")" != 000 ]; do
  if [ "$waited" -ge {START_TIMEOUT_SECONDS} ]; then
    echo "install.sh: the gateway did not answer within {START_TIMEOUT_SECONDS} s" >&2
    journalctl -u {UNIT_NAME} -n 20 --no-pager >&2 || true
    exit 1
  fi
  sleep 1
  waited=$((waited + 1))
done
"""


def install_command(image: str) -> str:
    """What the remote command runs in GATEWAY_DIR after writing the bundle there."""
    return f"sh install.sh '{image}'"


def render_gateway(policy: BaselinePolicy, image: str) -> Bundle:
    return Bundle(
        files=(
            RenderedFile(path="gateway.service", content=_unit(policy, image)),
            RenderedFile(path="install.sh", content=_install(policy), mode=0o755),
        )
    )

"""One customer's instance: cloud firewall, VPS, host baseline and gateway, as one component."""

from __future__ import annotations

import json
from typing import NamedTuple

import pulumi
import pulumi_command as command
import pulumi_hcloud as hcloud
import pulumi_random as random
import pulumi_tls as tls

from components.cloud_firewall import firewall_rules
from components.gateway import GATEWAY_DIR, PASSWORD_INPUT_ENV, install_command, render_gateway
from components.host_baseline import BUNDLE_DIR, HostSettings, render_host_baseline
from config.customer import CustomerConfig
from config.loader import StackSettings
from config.policy import BaselinePolicy

COMPONENT_TYPE = "clawhosters:index:CustomerInstance"
MANAGED_BY = "clawhosters"
# Installed before the baseline; python3-systemd lets fail2ban read sshd from the journal.
HOST_PACKAGES = ("iptables", "fail2ban", "python3-systemd", "docker.io")
# A new server needs a while before sshd answers; retry dialling for up to ~15 minutes.
DIAL_ATTEMPTS = 60
DIAL_TIMEOUT_SECONDS = 15
APT = "apt-get -o DPkg::Lock::Timeout=600 -q"

WAIT_FOR_CLOUD_INIT = """set -eu
cloud-init status --wait >/dev/null || true
test -f /var/lib/cloud/instance/boot-finished
"""


def _install_packages_script() -> str:
    # policy-rc.d keeps dpkg from starting the new services: Docker must not run before the
    # baseline exists, and Debian 12's fail2ban fails to start until its jail reads the journal.
    # The baseline and gateway steps start them, in that order.
    return f"""set -eu
export DEBIAN_FRONTEND=noninteractive
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
for attempt in 1 2 3; do {APT} update && break; [ "$attempt" = 3 ] && exit 1; sleep 10; done
{APT} install -y --no-install-recommends {" ".join(HOST_PACKAGES)}
"""


class RemoteScripts(NamedTuple):
    """The exact `create` text of each remote command: what the program deploys and what the policy
    pack compares a stack against."""

    wait_for_cloud_init: str
    packages: str
    baseline: str
    gateway: str
    # Content digests of the rendered bundles: a change re-runs the commands that install them.
    baseline_digest: str
    gateway_digest: str


def remote_scripts(settings: StackSettings, policy: BaselinePolicy) -> RemoteScripts:
    customer, platform = settings.customer, settings.platform
    baseline = render_host_baseline(
        policy,
        HostSettings(
            ssh_enabled=customer.ssh_enabled,
            customer_ssh_keys=customer.ssh_public_keys,
            provisioner_cidrs=platform.provisioner_cidrs,
        ),
    )
    gateway = render_gateway(policy, customer.gateway_image)
    return RemoteScripts(
        wait_for_cloud_init=WAIT_FOR_CLOUD_INIT,
        packages=_install_packages_script(),
        baseline=baseline.install_script(BUNDLE_DIR, "sh apply.sh"),
        gateway=gateway.install_script(GATEWAY_DIR, install_command(customer.gateway_image)),
        baseline_digest=baseline.digest,
        gateway_digest=gateway.digest,
    )


def _cloud_init(host_private_key: str, host_public_key: str) -> str:
    """Cloud-init that installs the program's host key, so the SSH host key can be pinned."""
    document = {
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_pwauth": False,
        "ssh_keys": {"ed25519_private": host_private_key, "ed25519_public": host_public_key.strip()},
    }
    return "#cloud-config\n" + json.dumps(document, indent=2) + "\n"


class CustomerInstance(pulumi.ComponentResource):
    """A customer's VPS with the network baseline applied before the gateway starts."""

    server_id: pulumi.Output[str]
    firewall_id: pulumi.Output[str]
    ipv4_address: pulumi.Output[str]
    ipv6_address: pulumi.Output[str]
    gateway_url: pulumi.Output[str]
    gateway_password: pulumi.Output[str]
    baseline_digest: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        config: StackSettings | CustomerConfig,
        policy: BaselinePolicy | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        policy = policy or BaselinePolicy()
        # A bare CustomerConfig runs with the platform's defaults.
        settings = config if isinstance(config, StackSettings) else StackSettings(customer=config)
        customer, platform = settings.customer, settings.platform
        child = pulumi.ResourceOptions(parent=self)

        scripts = remote_scripts(settings, policy)

        provisioning_key = tls.PrivateKey(f"{name}-provisioning-key", algorithm="ED25519", opts=child)
        host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519", opts=child)
        # Alphanumeric: it travels through docker's env-file, which takes values literally.
        password = random.RandomPassword(f"{name}-gateway-password", length=32, special=False, opts=child)
        # Secret explicitly, not only by the provider's say-so.
        gateway_password = pulumi.Output.secret(password.result)
        ssh_key = hcloud.SshKey(
            f"{name}-ssh-key",
            name=f"{customer.server_name}-provisioning",
            public_key=provisioning_key.public_key_openssh,
            opts=child,
        )

        if platform.firewall_mode == "shared":
            firewall_id: pulumi.Output[str] = pulumi.Output.from_input(str(platform.shared_firewall_id))
        else:
            firewall = hcloud.Firewall(
                f"{name}-firewall",
                name=f"{customer.server_name}-baseline",
                labels=self._labels(customer.customer_id),
                rules=firewall_rules(policy),
                opts=child,
            )
            firewall_id = firewall.id

        server = hcloud.Server(
            f"{name}-server",
            name=customer.server_name,
            server_type=customer.server_type,
            location=customer.location,
            image=platform.image,
            ssh_keys=[ssh_key.id],
            # Attached at creation: the server never exists without its provider-level firewall.
            firewall_ids=[firewall_id.apply(int)],
            labels=self._labels(customer.customer_id),
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
            # Carries the host's private key: secret in state and in every diff.
            user_data=pulumi.Output.secret(
                pulumi.Output.all(host_key.private_key_openssh, host_key.public_key_openssh).apply(
                    lambda keys: _cloud_init(keys[0], keys[1])
                )
            ),
            # These only shape a new server; changing them must never replace a customer's VPS.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["image", "userData", "sshKeys"]),
        )

        # Entirely secret so it diffs consistently and never shows the key.
        connection = pulumi.Output.secret(
            pulumi.Output.all(
                server.ipv4_address, provisioning_key.private_key_openssh, host_key.public_key_openssh
            ).apply(
                lambda values: command.remote.ConnectionArgs(
                    host=values[0],
                    user="root",
                    private_key=values[1],
                    host_key=values[2].strip(),
                    dial_error_limit=DIAL_ATTEMPTS,
                    per_dial_timeout=DIAL_TIMEOUT_SECONDS,
                )
            )
        )

        wait = command.remote.Command(
            f"{name}-wait-cloud-init",
            connection=connection,
            create=scripts.wait_for_cloud_init,
            triggers=[server.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[server]),
        )
        packages = command.remote.Command(
            f"{name}-packages",
            connection=connection,
            create=scripts.packages,
            triggers=[server.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[wait]),
        )
        baseline_command = command.remote.Command(
            f"{name}-baseline",
            connection=connection,
            create=scripts.baseline,
            triggers=[server.id, scripts.baseline_digest],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[packages]),
        )
        gateway_command = command.remote.Command(
            f"{name}-gateway",
            connection=connection,
            create=scripts.gateway,
            environment={PASSWORD_INPUT_ENV: gateway_password},
            # A re-applied baseline restarts nothing in Docker's chains, but re-asserting the
            # gateway after it keeps the order "baseline, then gateway" on every change.
            triggers=[server.id, scripts.baseline_digest, scripts.gateway_digest],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[baseline_command]),
        )

        self.server_id = server.id
        self.firewall_id = firewall_id
        self.ipv4_address = server.ipv4_address
        self.ipv6_address = server.ipv6_address
        # Known only once the gateway command has run: a URL that is shown is a URL that serves.
        self.gateway_url = pulumi.Output.all(server.ipv4_address, gateway_command.stdout).apply(
            lambda values: f"http://{values[0]}:{policy.inbound.gateway_port}/"
        )
        self.gateway_password = gateway_password
        self.baseline_digest = pulumi.Output.from_input(scripts.baseline_digest)
        self.register_outputs(
            {
                "server_id": self.server_id,
                "firewall_id": self.firewall_id,
                "ipv4_address": self.ipv4_address,
                "ipv6_address": self.ipv6_address,
                "gateway_url": self.gateway_url,
                "gateway_password": self.gateway_password,
                "baseline_digest": self.baseline_digest,
            }
        )

    @staticmethod
    def _labels(customer_id: str) -> dict[str, str]:
        return {"customer": customer_id, "managed-by": MANAGED_BY}

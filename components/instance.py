"""One customer's instance: cloud firewall, VPS, host baseline and gateway, as one component."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple, TypeVar

import pulumi
import pulumi_command as command
import pulumi_hcloud as hcloud
import pulumi_random as random
import pulumi_tls as tls
from pydantic import SecretStr

from components.cloud_firewall import firewall_rules
from components.gateway import GATEWAY_DIR, install_command, render_gateway
from components.host_baseline import BUNDLE_DIR, HostSettings, render_host_baseline
from components.safety import check_existing
from config.customer import CustomerConfig, customer_labels
from config.loader import StackSettings
from config.policy import BaselinePolicy

COMPONENT_TYPE = "clawhosters:index:CustomerInstance"
T = TypeVar("T")
# The Pulumi providers the resources below come from (their plugins must be in the toolchain).
PROVIDERS = ("hcloud", "tls", "random", "command")
# Installed before the baseline; python3-systemd lets fail2ban read sshd from the journal.
HOST_PACKAGES = ("iptables", "fail2ban", "python3-systemd", "docker.io")
# A new server needs a while before sshd answers; retry dialling for up to ~15 minutes.
DIAL_ATTEMPTS = 60
DIAL_TIMEOUT_SECONDS = 15
APT = "apt-get -o DPkg::Lock::Timeout=600 -q"
# The customer's A and AAAA records: short enough that a new server's addresses are seen soon.
DNS_TTL_SECONDS = 300
CLOUD_INIT_TIMEOUT_SECONDS = 1200

# cloud-init writes boot-finished when its last stage ends, whatever a module reported.
# `cloud-init status --wait` is no substitute: it returns as soon as any module reports an error,
# while later stages (and the apt lock) are still busy.
WAIT_FOR_CLOUD_INIT = f"""set -eu
waited=0
until [ -f /var/lib/cloud/instance/boot-finished ]; do
  if [ "$waited" -ge {CLOUD_INIT_TIMEOUT_SECONDS} ]; then
    echo "cloud-init has not finished after {CLOUD_INIT_TIMEOUT_SECONDS} s" >&2
    cloud-init status --long >&2 || true
    exit 1
  fi
  sleep 2
  waited=$((waited + 2))
done
# Module errors are shown, not fatal: the host key pin already proved our own user_data applied.
cloud-init status --long || true
"""


# The remote steps that run once per server: an edit of their scripts reaches new servers only.
WAIT_STEP = "wait-cloud-init"
PACKAGES_STEP = "packages"
ONCE_PER_SERVER_STEPS = (WAIT_STEP, PACKAGES_STEP)


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
    # With `ssh_keys` given, cloud-init generates no other host keys, and `ssh_deletekeys` removes
    # the image's: the pinned key is the only one sshd presents.
    document = {
        "ssh_deletekeys": True,
        "ssh_pwauth": False,
        "ssh_keys": {"ed25519_private": host_private_key, "ed25519_public": host_public_key.strip()},
    }
    return "#cloud-config\n" + json.dumps(document, indent=2) + "\n"


def secret_once_known(value: pulumi.Output[T]) -> pulumi.Output[T]:
    """`value` as a secret once it is known, and as a plain unknown before (a preview's).

    The command provider's Check (pulumi-go-provider's infer) decodes a secret whose value is still
    unknown into a known zero value: an empty `stdin`, a `connection` of defaults. The plan saved by
    that preview then demands those values of the `up`, which fails with "violates plan: properties
    changed". A plain unknown stays unknown; nothing secret is sent in clear, as it holds no value yet.
    """
    return pulumi.Output.unsecret(value).apply(pulumi.Output.secret)


def _connection_secret_once_known(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult:
    """pulumi-command's SDK makes `connection` a secret whatever its state: made secret only once known."""
    props = {**args.props, "connection": secret_once_known(args.props["connection"])}
    return pulumi.ResourceTransformationResult(props, args.opts)


def snapshot_expiry(today: date, retention_days: int) -> str:
    """The `expires-on` label of a decommission snapshot (Hetzner label values allow a date)."""
    return (today + timedelta(days=retention_days)).isoformat()


class CustomerInstance(pulumi.ComponentResource):
    """A customer's VPS with the network baseline applied before the gateway starts."""

    server_id: pulumi.Output[str]
    firewall_id: pulumi.Output[str]
    ipv4_address: pulumi.Output[str]
    ipv6_address: pulumi.Output[str]
    gateway_url: pulumi.Output[str]
    gateway_password: pulumi.Output[str]
    baseline_digest: pulumi.Output[str]
    # `<customer_id>.<platform:dns_zone>` once its records exist; None without a zone.
    hostname: pulumi.Output[str] | None
    # Only while decommissioning: the snapshot that outlives `pulumi destroy`.
    snapshot_id: pulumi.Output[str] | None

    def __init__(
        self,
        name: str,
        config: StackSettings | CustomerConfig,
        policy: BaselinePolicy | None = None,
        opts: pulumi.ResourceOptions | None = None,
        dns_token: SecretStr | None = None,
    ) -> None:
        """`dns_token`: the platform's DNS project's (config.loader.dns_token); None only in a preview."""
        policy = policy or BaselinePolicy()
        # A bare CustomerConfig runs with the platform's defaults.
        settings = config if isinstance(config, StackSettings) else StackSettings(customer=config)
        customer, platform = settings.customer, settings.platform
        # Before anything is registered: a refused change creates nothing.
        check_existing(settings, policy)
        super().__init__(COMPONENT_TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # Protected unless the platform decommissions the customer: a replace or delete of the
        # server (their data) fails in preview and up until then.
        protected = not customer.decommission

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
            # Hetzner keeps a key without the line end the tls provider writes; the key as given
            # would differ from the state on every later `up` and replace the SSH key.
            public_key=provisioning_key.public_key_openssh.apply(str.strip),
            opts=child,
        )

        firewall_ids: list[pulumi.Output[str]] = []
        if platform.firewall_mode in ("dedicated", "both"):
            firewall = hcloud.Firewall(
                f"{name}-firewall",
                name=f"{customer.server_name}-baseline",
                labels=customer_labels(customer.customer_id),
                rules=firewall_rules(policy),
                # Hetzner has no delete protection for firewalls; Pulumi's protect stands in. In
                # "both" it is unprotected, so the following switch to "shared" can remove it.
                opts=pulumi.ResourceOptions(parent=self, protect=protected and platform.firewall_mode == "dedicated"),
            )
            firewall_ids.append(firewall.id)
        if platform.firewall_mode in ("shared", "both"):
            firewall_ids.append(pulumi.Output.from_input(str(platform.shared_firewall_id)))

        server = hcloud.Server(
            f"{name}-server",
            name=customer.server_name,
            server_type=customer.server_type,
            location=customer.location,
            image=platform.image,
            ssh_keys=[ssh_key.id],
            # Attached at creation: the server never exists without its provider-level firewall.
            firewall_ids=[firewall_id.apply(int) for firewall_id in firewall_ids],
            labels=customer_labels(customer.customer_id),
            # Hetzner requires both equal; they stop a delete or rebuild outside Pulumi too.
            delete_protection=protected,
            rebuild_protection=protected,
            # A resize leaves the disk as it is, so a later downgrade stays possible.
            keep_disk=True,
            # Hetzner's daily backups unless the platform takes its own snapshots; switched in place
            # (the provider's enable_backup/disable_backup actions), never by a new server.
            backups=platform.backups.mode == "hetzner",
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
            # Carries the host's private key: secret in state and in every diff.
            user_data=pulumi.Output.secret(
                pulumi.Output.all(host_key.private_key_openssh, host_key.public_key_openssh).apply(
                    lambda keys: _cloud_init(keys[0], keys[1])
                )
            ),
            # These only shape a new server; changing them must never replace a customer's VPS.
            opts=pulumi.ResourceOptions(
                parent=self, ignore_changes=["image", "userData", "sshKeys"], protect=protected
            ),
        )

        self.snapshot_id = None
        if customer.decommission:
            snapshot = hcloud.Snapshot(
                f"{name}-final-snapshot",
                server_id=server.id.apply(int),
                description=f"{customer.server_name} at decommissioning",
                labels={
                    **customer_labels(customer.customer_id),
                    "expires-on": snapshot_expiry(datetime.now(UTC).date(), platform.snapshot_retention_days),
                },
                # Kept by `pulumi destroy`; its expiry is fixed when it is taken.
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=True, ignore_changes=["labels"]),
            )
            self.snapshot_id = snapshot.id

        self.hostname = None
        if platform.dns_zone is not None:
            self.hostname = self._records(name, customer, platform.dns_zone, server, dns_token)

        connection = pulumi.Output.all(
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

        # Once per server: a new server runs the current scripts; an edit of them never reaches a
        # running VPS (no update, no SSH session, no refused environment request). Whatever an
        # existing server must get later belongs in the baseline or gateway step.
        once_per_server = ["create"]
        connection_once_known = [_connection_secret_once_known]
        wait = command.remote.Command(
            f"{name}-{WAIT_STEP}",
            connection=connection,
            create=scripts.wait_for_cloud_init,
            triggers=[server.id],
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[server], ignore_changes=once_per_server, transformations=connection_once_known
            ),
        )
        packages = command.remote.Command(
            f"{name}-{PACKAGES_STEP}",
            connection=connection,
            create=scripts.packages,
            triggers=[server.id],
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[wait], ignore_changes=once_per_server, transformations=connection_once_known
            ),
        )
        baseline_command = command.remote.Command(
            f"{name}-baseline",
            connection=connection,
            create=scripts.baseline,
            triggers=[server.id, scripts.baseline_digest],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[packages], transformations=connection_once_known),
        )
        gateway_command = command.remote.Command(
            f"{name}-gateway",
            connection=connection,
            create=scripts.gateway,
            # On standard input: an SSH environment request would be refused by a stock sshd.
            stdin=secret_once_known(gateway_password),
            # Not the baseline's digest: a baseline change must not restart the customer's gateway.
            triggers=[server.id, scripts.gateway_digest],
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[baseline_command], transformations=connection_once_known
            ),
        )

        self.server_id = server.id
        self.firewall_id = pulumi.Output.all(*firewall_ids).apply(",".join)
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
                **({"hostname": self.hostname} if self.hostname is not None else {}),
                **({"snapshot_id": self.snapshot_id} if self.snapshot_id is not None else {}),
            }
        )

    def _records(
        self, name: str, customer: CustomerConfig, zone: str, server: hcloud.Server, token: SecretStr | None
    ) -> pulumi.Output[str]:
        """The customer's A and AAAA records in the platform's zone, written with the DNS project's own
        provider: its token never reaches a server, nor a customer project's provider. Unprotected: a
        decommission's `destroy` removes them with the server."""
        dns = hcloud.Provider(
            f"{name}-dns",
            token=pulumi.Output.secret(token.get_secret_value()) if token is not None else None,
            opts=pulumi.ResourceOptions(parent=self),
        )
        records = [
            hcloud.ZoneRrset(
                f"{name}-{kind.lower()}-record",
                zone=zone,
                name=customer.customer_id,
                type=kind,
                ttl=DNS_TTL_SECONDS,
                records=[hcloud.ZoneRrsetRecordArgs(value=address)],
                labels=customer_labels(customer.customer_id),
                opts=pulumi.ResourceOptions(parent=self, provider=dns),
            )
            for kind, address in (("A", server.ipv4_address), ("AAAA", server.ipv6_address))
        ]
        # Known once both records exist: a name that is shown is a name that resolves.
        return pulumi.Output.all(*(record.id for record in records)).apply(lambda _: customer.hostname(zone))

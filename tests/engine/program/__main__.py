"""Random resources on every run; with `read_hcloud`, a Hetzner data-source read; with `cloud`, a
server with its SSH key and firewall (and Hetzner's backups with `backups`), created through the
hcloud provider."""

import pulumi
import pulumi_hcloud as hcloud
import pulumi_random as random

config = pulumi.Config()
length = config.get_int("length") or 24

password = random.RandomPassword("password", length=length, special=False)
pet = random.RandomPet("pet", length=2)

pulumi.export("pet", pet.id)
pulumi.export("password", password.result)
pulumi.export("password_length", password.length)

if config.get_bool("read_hcloud"):
    servers = hcloud.get_servers(with_selector="managed-by=engine-check")
    pulumi.export("servers", [server.name for server in servers.servers])

if config.get_bool("cloud"):
    key = hcloud.SshKey("key", public_key=config.require("ssh_public_key"))
    firewall = hcloud.Firewall(
        "firewall",
        rules=[hcloud.FirewallRuleArgs(direction="in", protocol="tcp", port="22", source_ips=["0.0.0.0/0", "::/0"])],
    )
    server = hcloud.Server(
        "server",
        server_type=config.get("server_type") or "cx23",
        location="fsn1",
        image="debian-12",
        ssh_keys=[key.id],
        firewall_ids=[firewall.id.apply(int)],
        labels={"managed-by": "engine-check"},
        keep_disk=True,
        backups=config.get_bool("backups") or False,
    )
    pulumi.export("server_id", server.id)
    pulumi.export("ipv4_address", server.ipv4_address)

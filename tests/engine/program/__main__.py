"""Random resources on every run; with `read_hcloud`, a Hetzner data-source read; with `cloud`, a
server with its SSH key and firewall (and Hetzner's backups with `backups`), created through the
hcloud provider; with `dns`, a DNS zone and an A record through a second hcloud provider, on another
project's token; with `length_after_pet`, the password's length is known only once the pet exists, so a
preview passes whatever it is and a length the provider refuses fails the `up` itself."""

import pulumi
import pulumi_hcloud as hcloud
import pulumi_random as random

config = pulumi.Config()
length = config.get_int("length") or 24

pet = random.RandomPet("pet", length=2)
password_length = pet.id.apply(lambda _: length) if config.get_bool("length_after_pet") else length
password = random.RandomPassword("password", length=password_length, special=False)

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

if config.get_bool("dns"):
    # A zone and a record in another project, written with that project's own token.
    dns = hcloud.Provider(
        "dns",
        token=config.require_secret("dns_token"),
        endpoint=config.require("dns_endpoint"),
        poll_interval="100ms",
    )
    on_dns = pulumi.ResourceOptions(provider=dns)
    zone = hcloud.Zone("zone", name="engine-check.example", mode="primary", ttl=600, opts=on_dns)
    record = hcloud.ZoneRrset(
        "www",
        zone=zone.name,
        name="www",
        type="A",
        ttl=300,
        records=[hcloud.ZoneRrsetRecordArgs(value=config.get("address") or "198.51.100.10")],
        labels={"managed-by": "engine-check"},
        opts=on_dns,
    )
    pulumi.export("zone_id", zone.id)
    pulumi.export("record_id", record.id)

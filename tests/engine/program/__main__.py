"""Random resources on every run; with `read_hcloud` set, a Hetzner data-source read as well."""

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
    servers = hcloud.get_servers(with_selector="managed-by=clawhosters")
    pulumi.export("servers", [server.id for server in servers.servers])

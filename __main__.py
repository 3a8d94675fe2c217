"""One customer stack: validated settings in, one CustomerInstance, its outputs exported."""

import pulumi

from components.instance import CustomerInstance
from config.loader import load_dns_token, load_stack_settings

settings = load_stack_settings()
instance = CustomerInstance(settings.customer.stack_name, settings, dns_token=load_dns_token(settings.platform))

pulumi.export("server_id", instance.server_id)
pulumi.export("firewall_id", instance.firewall_id)
pulumi.export("ipv4_address", instance.ipv4_address)
pulumi.export("ipv6_address", instance.ipv6_address)
pulumi.export("gateway_url", instance.gateway_url)
pulumi.export("gateway_password", instance.gateway_password)
pulumi.export("baseline_digest", instance.baseline_digest)
if instance.hostname is not None:
    pulumi.export("hostname", instance.hostname)
if instance.snapshot_id is not None:
    pulumi.export("snapshot_id", instance.snapshot_id)

"""An emulation of Hetzner's Cloud API (https://docs.hetzner.cloud), for the lab's small Hetzner Cloud.

It speaks what the program, pulumi-hcloud (terraform-provider-hcloud v1.68.0 on hcloud-go v2) and
hcloud-python use, as Hetzner answers in 2026: servers (a location, no datacenter) and their actions,
firewalls, SSH keys, images and snapshots, server types (the platform's catalogue, config/hetzner.yaml)
with per-location deprecation and availability (stock-outs set by the lab), locations and actions;
`/datacenters` gone (410); Bearer tokens mapped to separate projects, Hetzner's pagination, error
format and rate limit.
Servers run on a `MachineBackend` (backend.py); the default one only records.

Fidelity: no package on PyPI or npm ships Hetzner's OpenAPI description (hetzner-sdk-ts downloads
it when it is built; cloudalone and codecraftai-restclient-hetzner do not carry it), so response
shapes are checked against what the clients parse: tests/hcloud_api compares every response with
the fields hcloud-python's domain classes read (`__api_properties__`), and views.py follows
hcloud-go v2.47.0's `hcloud/schema` (which also reads `load_balancers`, `deleted`, `included_traffic`).

Run it: `python -m lab.hcloud_api --state DIR --listen 127.0.0.1:8080 --token PROJECT=TOKEN`.
"""

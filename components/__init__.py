"""Pulumi components and the host-side files they install."""

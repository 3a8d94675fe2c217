"""Validated configuration: the baseline contract, customer and platform settings."""

from config.customer import HETZNER_LOCATIONS, CustomerConfig, PlatformConfig, parse_openssh_public_key
from config.loader import ConfigError, StackSettings, load_stack_settings, settings_from_mapping
from config.policy import (
    BaselinePolicy,
    BlockedService,
    DriftPolicy,
    EgressPolicy,
    Fail2banPolicy,
    InboundPolicy,
    MetadataPolicy,
    SynGuardPolicy,
)

__all__ = [
    "HETZNER_LOCATIONS",
    "BaselinePolicy",
    "BlockedService",
    "ConfigError",
    "CustomerConfig",
    "DriftPolicy",
    "EgressPolicy",
    "Fail2banPolicy",
    "InboundPolicy",
    "MetadataPolicy",
    "PlatformConfig",
    "StackSettings",
    "SynGuardPolicy",
    "load_stack_settings",
    "parse_openssh_public_key",
    "settings_from_mapping",
]

"""SSH takes keys only: the platform's provisioning key always, the customer's only when enabled.

Logins come from the provisioner's network, which fail2ban never bans, so the failures here do
not interfere with the ban tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.topology import PROVISIONER
from lab.world import Lab
from tests.lab.helpers import ssh

PASSWORD_ONLY = (
    "-o",
    "PubkeyAuthentication=no",
    "-o",
    "PreferredAuthentications=password,keyboard-interactive",
)


@pytest.fixture
def customer_ssh(lab: Lab, customer_key: Path) -> Iterator[None]:
    """The customer turns SSH on with their key: an update of the stack."""
    settings = lab.default_settings()
    key = customer_key.with_suffix(".pub").read_text().strip()
    customer = settings.customer.model_copy(update={"ssh_enabled": True, "ssh_public_keys": (key,)})
    lab.deploy(settings.model_copy(update={"customer": customer}))
    try:
        yield
    finally:
        lab.deploy(lab.default_settings())


@pytest.mark.parametrize("family", [4, 6])
def test_without_customer_ssh_only_the_provisioning_key_works(lab: Lab, customer_key: Path, family: int) -> None:
    address = lab.address(family)
    assert ssh(PROVISIONER.namespace, address, lab.provisioning_key).returncode == 0
    refused = ssh(PROVISIONER.namespace, address, customer_key)
    assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr


@pytest.mark.usefixtures("customer_ssh")
def test_with_customer_ssh_the_customer_key_works_and_passwords_never(lab: Lab, customer_key: Path) -> None:
    assert ssh(PROVISIONER.namespace, lab.ipv4, customer_key).returncode == 0
    password = ssh(PROVISIONER.namespace, lab.ipv4, customer_key, *PASSWORD_ONLY)
    # The server offers no password or keyboard-interactive method at all.
    assert password.returncode == 255 and "Permission denied (publickey)." in password.stderr

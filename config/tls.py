"""A customer gateway's certificate, as the control plane hands it to the customer's stack.

`tls:certificate` is the full chain in PEM, the leaf first (public: plain stack config); `tls:private_key`
is the leaf's key in PEM (a Pulumi secret: encrypted in the stack's config and state, sent to the
server only over the pinned SSH connection). Invalid material fails at load time, naming the field.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

TLS_NAMESPACE = "tls"


def _chain(pem: str) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as error:
        raise ValueError(f"must be PEM certificates, the leaf first: {error}") from None
    return certificates


class GatewayCertificate(BaseModel):
    """The gateway's certificate chain and private key."""

    # An error never repeats the input: it would hold the private key.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    certificate: str
    private_key: SecretStr

    @field_validator("certificate")
    @classmethod
    def _pem_chain(cls, value: str) -> str:
        _chain(value)
        return value

    @field_validator("private_key")
    @classmethod
    def _pem_key(cls, value: SecretStr) -> SecretStr:
        try:
            serialization.load_pem_private_key(value.get_secret_value().encode(), password=None)
        except (ValueError, TypeError):
            # The key's text is never repeated in an error.
            raise ValueError("must be an unencrypted private key in PEM") from None
        return value

    @model_validator(mode="after")
    def _key_matches_leaf(self) -> GatewayCertificate:
        key = serialization.load_pem_private_key(self.private_key.get_secret_value().encode(), password=None)
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        encoding = serialization.Encoding.DER
        if key.public_key().public_bytes(encoding, public) != self.leaf.public_key().public_bytes(encoding, public):
            raise ValueError("private_key is not the key of the certificate's leaf (the chain's first certificate)")
        return self

    @property
    def chain(self) -> list[x509.Certificate]:
        return _chain(self.certificate)

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def not_after(self) -> datetime:
        return self.leaf.not_valid_after_utc

    @property
    def not_before(self) -> datetime:
        return self.leaf.not_valid_before_utc

    @property
    def dns_names(self) -> tuple[str, ...]:
        try:
            names = self.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return ()
        return tuple(names.get_values_for_type(x509.DNSName))

    def covers(self, hostname: str) -> bool:
        """Whether the leaf names exactly this host: a customer's certificate is never a wildcard."""
        return hostname in self.dns_names

"""A stack's state with every secret replaced: what a pull request's preview may be given.

`redact(export)` takes `pulumi stack export --show-secrets` (the secrets in plaintext, held only in
memory) and returns the same deployment in which every secret scalar (a key, a password, a token:
each secret whose value is a string) is replaced by a marker wherever it occurs, in secrets and
outside them, whole or inside a longer string. The marker is a keyed hash under a key drawn for this
call, so equal secrets stay equal (a connection's private key is still the key resource's output, and
a preview against the copy shows the diffs the real state would) but nothing about a secret can be
learned from it. Structure, resource ids, dependencies and every non-secret value are kept. The copy is
checked before it is returned: no secret scalar may be left in it.

The copy's secrets are still marked secret and carry no secrets provider: it is imported into a
throwaway stack (its own passphrase), which encrypts them again (`fleet.sandbox`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from typing import Any

# Pulumi's mark of a secret value in a state file (not itself a secret).
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105
# A shorter secret is replaced only where it is a whole value: as part of longer text it would hit
# unrelated values ("1", "on").
MIN_EMBEDDED = 8


class RedactionError(RuntimeError):
    """The export cannot be redacted safely; nothing of it may be passed on."""


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def _secrets(value: Any) -> Iterator[Any]:
    """The plaintext value of every secret in `value`, a secret's own nested secrets included."""
    if _is_secret(value):
        plaintext = _plaintext(value)
        yield plaintext
        yield from _secrets(plaintext)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets(item)
    elif isinstance(value, list):
        for item in value:
            yield from _secrets(item)


def _plaintext(secret: dict[str, Any]) -> Any:
    if "plaintext" not in secret:
        raise RedactionError("the export holds an encrypted secret: export it with --show-secrets")
    return json.loads(secret["plaintext"])


def _strings(value: Any) -> Iterator[str]:
    """Every string in `value`, keys included, secrets decoded."""
    if _is_secret(value):
        yield from _strings(_plaintext(value))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


class _Redactor:
    def __init__(self, sensitive: set[str]) -> None:
        self._key = secrets.token_bytes(32)
        # Longest first, so a secret that contains another is replaced whole.
        self._embedded = sorted((s for s in sensitive if len(s) >= MIN_EMBEDDED), key=len, reverse=True)
        self._sensitive = sensitive

    def marker(self, secret: str) -> str:
        digest = hmac.new(self._key, secret.encode(), hashlib.sha256).hexdigest()[:16]
        return f"[redacted {digest}]"

    def value(self, value: Any) -> Any:
        if _is_secret(value):
            return {SIG_KEY: SECRET_SIG, "plaintext": json.dumps(self.value(_plaintext(value)))}
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, str):
            if value in self._sensitive:
                return self.marker(value)
            for secret in self._embedded:
                if secret in value:
                    value = value.replace(secret, self.marker(secret))
            return value
        return value


def redact(export: dict[str, Any], config_secrets: list[str] | None = None) -> dict[str, Any]:
    """The export (`pulumi stack export --show-secrets`, parsed) with every secret replaced.

    `config_secrets` are the plaintext values of the stack's secret config, which the program may
    have put into its resources: they are replaced too.
    """
    deployment = export.get("deployment")
    if not isinstance(deployment, dict):
        raise RedactionError("not a stack export: it has no deployment")
    sensitive = {value for value in _secrets(deployment) if isinstance(value, str)}
    sensitive.update(config_secrets or ())
    sensitive.discard("")
    redactor = _Redactor(sensitive)
    redacted = {key: redactor.value(value) for key, value in deployment.items() if key != "secrets_providers"}
    embedded = [secret for secret in sensitive if len(secret) >= MIN_EMBEDDED]
    left = {text for text in _strings(redacted) if text in sensitive or any(secret in text for secret in embedded)}
    if left:
        raise RedactionError(f"{len(left)} value(s) still hold a secret after redaction")
    return {**{key: value for key, value in export.items() if key != "deployment"}, "deployment": redacted}

"""Hetzner's label syntax: what the platform's settings accept and what the lab's emulation of
Hetzner's API enforces (docs.hetzner.cloud, *Labels*)."""

from __future__ import annotations

import re

_NAME = r"[a-zA-Z0-9](?:[a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?"
_PREFIX = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
_KEY = re.compile(rf"(?:(?P<prefix>{_PREFIX})/)?{_NAME}")
_VALUE = re.compile(rf"(?:{_NAME})?")


def label_problem(key: str, value: object) -> str | None:
    """Why Hetzner would refuse the label `key=value`, or None when it takes it."""
    match = _KEY.fullmatch(key)
    if match is None or len(match.group("prefix") or "") > 253:
        return f"label key {key!r} is invalid"
    if (match.group("prefix") or "").endswith("hetzner.cloud"):
        return "the hetzner.cloud/ prefix is reserved"
    if not isinstance(value, str) or _VALUE.fullmatch(value) is None:
        return f"label value {value!r} of {key!r} is invalid"
    return None

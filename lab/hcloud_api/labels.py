"""Labels as Hetzner validates them, and its label selector language."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from lab.hcloud_api.errors import ApiError, invalid_input

_NAME = r"[a-zA-Z0-9](?:[a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?"
_PREFIX = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
_KEY = re.compile(rf"(?:(?P<prefix>{_PREFIX})/)?{_NAME}")
_VALUE = re.compile(rf"(?:{_NAME})?")
_TERM = re.compile(
    r"\s*(?:(?P<absent>!)\s*(?P<absent_key>[^\s=!(),]+)"
    r"|(?P<set_key>[^\s=!(),]+)\s+(?P<set_op>in|notin)\s+\((?P<values>[^()]*)\)"
    r"|(?P<key>[^\s=!(),]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s=!(),]*))?)\s*"
)

Selector = Callable[[Mapping[str, str]], bool]


def validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        match = _KEY.fullmatch(key)
        if match is None or len(match.group("prefix") or "") > 253:
            raise invalid_input("labels", f"label key {key!r} is invalid")
        if (match.group("prefix") or "").endswith("hetzner.cloud"):
            raise invalid_input("labels", "the hetzner.cloud/ prefix is reserved")
        if not isinstance(value, str) or _VALUE.fullmatch(value) is None:
            raise invalid_input("labels", f"label value {value!r} of {key!r} is invalid")
    return dict(labels)


def parse_selector(text: str) -> Selector:
    """`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, joined by commas: all must hold."""
    terms: list[Selector] = []
    position = 0
    while position < len(text):
        match = _TERM.match(text, position)
        if match is None or match.end() == position:
            raise _bad_selector(text)
        terms.append(_term(match))
        position = match.end()
        if position < len(text):
            if text[position] != ",":
                raise _bad_selector(text)
            position += 1
            if position == len(text):
                raise _bad_selector(text)
    if not terms:
        raise _bad_selector(text)
    return lambda labels: all(term(labels) for term in terms)


def _term(match: re.Match[str]) -> Selector:
    if match.group("absent"):
        key = match.group("absent_key")
        return lambda labels: key not in labels
    if match.group("set_key"):
        key, inside = match.group("set_key"), match.group("set_op") == "in"
        values = {value.strip() for value in match.group("values").split(",")}
        return lambda labels: (key in labels and labels[key] in values) == inside
    key, op, value = match.group("key"), match.group("op"), match.group("value")
    if op is None:
        return lambda labels: key in labels
    if op == "!=":
        return lambda labels: labels.get(key) != value
    return lambda labels: labels.get(key) == value


def _bad_selector(text: str) -> ApiError:
    return invalid_input("label_selector", f"unable to parse label selector {text!r}")

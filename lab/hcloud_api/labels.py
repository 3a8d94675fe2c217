"""Labels as Hetzner validates them, and its label selector language."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from config.labels import label_problem
from lab.hcloud_api.errors import ApiError, invalid_input

_TERM = re.compile(
    r"\s*(?:(?P<absent>!)\s*(?P<absent_key>[^\s=!(),]+)"
    r"|(?P<set_key>[^\s=!(),]+)\s+(?P<set_op>in|notin)\s+\((?P<values>[^()]*)\)"
    r"|(?P<key>[^\s=!(),]+)\s*(?:(?P<op>==|=|!=)\s*(?P<value>[^\s=!(),]*))?)\s*"
)

Selector = Callable[[Mapping[str, str]], bool]


def validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if (problem := label_problem(key, value)) is not None:
            raise invalid_input("labels", problem)
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

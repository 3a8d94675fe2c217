"""This project's command and tls providers answer the program's requests exactly as upstream's do.

Each transcript in tests/providers/transcripts holds the requests the engine sends for the program
and what upstream's plugin (built from its public source, `python -m tests.providers.record`)
answered: responses, errors and log messages. Here the same requests go to the plugin the CLI loads
(the build setup.sh installed into its plugin cache), and every answer must be the same, step by step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import toolchain
from tests.providers.cases import PROVIDERS, transcript_path
from tests.providers.harness import Step, run_steps
from toolchain.plugins import Plugin


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_the_pinned_plugin_answers_as_upstream_did(provider: str, tmp_path: Path) -> None:
    recorded = json.loads(transcript_path(provider).read_text())
    steps = [Step(e["name"], e["method"], e["request"], e["about"]) for e in recorded["exchanges"]]
    # The plugin the CLI loads: the build setup.sh installed into its plugin cache.
    binary = Plugin(provider, toolchain.Pins.load().components[provider].version).installed(toolchain.plugin_cache())
    transcribed = PROVIDERS[provider]
    with transcribed.live_values(tmp_path) as placeholders:
        answers = run_steps(binary, steps, placeholders, transcribed.normalise)
    assert [a["name"] for a in answers] == [e["name"] for e in recorded["exchanges"]]
    for expected, actual in zip(recorded["exchanges"], answers, strict=True):
        assert actual == expected, f"{provider}: step {expected['name']} ({expected['about']}) answers otherwise"


def test_the_transcripts_hold_the_requests_the_cases_make() -> None:
    """A case edited without recording upstream's answers again would test nothing new."""
    for provider, transcribed in PROVIDERS.items():
        recorded = json.loads(transcript_path(provider).read_text())["exchanges"]
        fields = ("name", "method", "request", "about")
        made = [{key: getattr(step, key) for key in fields} for step in transcribed.steps()]
        held = [{key: exchange[key] for key in fields} for exchange in recorded]
        assert held == made, f"tests/providers/transcripts/{provider}.json is stale: record it again"

"""The README's tables are generated from the policy, the catalogue and the default plans, and must be current."""

from pathlib import Path

import pytest

from config import BaselinePolicy
from config.docs import START, baseline_table, with_table, with_tables

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_table_is_generated_from_the_policy() -> None:
    document = README.read_text()
    assert with_tables(document, BaselinePolicy()) == document, "run: python -m config.docs README.md"
    assert baseline_table(BaselinePolicy()) in document


def test_the_table_follows_the_policy() -> None:
    policy = BaselinePolicy()
    changed = policy.model_copy(update={"syn_guard": policy.syn_guard.model_copy(update={"burst": 99})})
    assert "burst 99" in baseline_table(changed)
    assert "burst 99" not in baseline_table(policy)


def test_a_document_without_the_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="baseline-table"):
        with_table("no markers here", BaselinePolicy())
    assert START.startswith("<!--")

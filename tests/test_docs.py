"""The README's tables are generated from the policy, the catalogue and the default plans, and must be current."""

from decimal import Decimal
from pathlib import Path

import pytest

from config import BaselinePolicy
from config.docs import START, backup_costs_table, baseline_table, with_table, with_tables
from config.hetzner import HETZNER

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


def test_the_backup_costs_follow_the_catalogue_s_prices() -> None:
    assert "| `cpx22` | €19.99 | €4.00 | 258 GB |" in backup_costs_table(HETZNER, ("cpx22",))
    dearer = HETZNER.model_copy(
        update={"pricing": HETZNER.pricing.model_copy(update={"snapshot_per_gb_month": Decimal("0.04")})}
    )
    assert backup_costs_table(dearer, ("cpx22",)).endswith("| `cpx22` | €19.99 | €4.00 | 100 GB |")

"""The offline preview a newcomer runs: the example stack, under mocks, described in plain text."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.offline import main, stack_file_config
from config import BaselinePolicy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "Pulumi.customer-example.yaml"


def test_the_example_stack_is_described_without_revealing_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(EXAMPLE)]) == 0
    shown = capsys.readouterr().out
    assert "gateway_password = [secret]" in shown
    for port in BaselinePolicy().inbound.open_tcp_ports:
        assert f"in  tcp  {port} " in shown
    assert "hcloud:index/server:Server" in shown
    # Shown as a preview: the DNS project's token is not needed to see the records it would write.
    assert "DNS: A example.gateways.clawhosters.example -> 203.0.113.10 (the DNS project's provider)" in shown
    assert "hostname = example.gateways.clawhosters.example" in shown
    assert "PRIVATE KEY" not in shown


def test_structured_stack_values_arrive_as_pulumi_text() -> None:
    config = stack_file_config(EXAMPLE)
    assert config["clawhosters:ssh_enabled"] == "false"
    assert config["platform:provisioner_cidrs"].startswith('["')


def test_a_bad_stack_file_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stack = tmp_path / "Pulumi.customer-bad.yaml"
    stack.write_text("config:\n  clawhosters:customer_id: Bad_Id\n  clawhosters:gateway_image: x:1\n")
    assert main([str(stack)]) == 2
    assert "clawhosters:customer_id" in capsys.readouterr().err


def test_the_stack_is_named_by_the_file_and_must_be_the_customers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "Pulumi.customer-globex.yaml"
    stack.write_text(EXAMPLE.read_text())
    assert main([str(stack)]) == 2
    error = capsys.readouterr().err
    assert "clawhosters:customer_id" in error and "'customer-globex'" in error

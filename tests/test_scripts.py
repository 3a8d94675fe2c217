"""Every shell script the product runs on a VPS passes shellcheck (POSIX sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from components.gateway import render_gateway
from components.host_baseline import HostSettings, render_host_baseline
from components.offline import COMMAND, build_graph
from config import BaselinePolicy, CustomerConfig

IMAGE = "ghcr.io/openclaw/gateway:1.4.2@sha256:" + "ab" * 32


def _scripts() -> dict[str, str]:
    policy = BaselinePolicy()
    scripts = {
        "apply.sh": render_host_baseline(policy, HostSettings()).file("apply.sh").content,
        "gateway install.sh": render_gateway(policy, IMAGE).file("install.sh").content,
    }
    graph = build_graph(CustomerConfig(customer_id="acme", gateway_image=IMAGE))
    for command in graph.of_type(COMMAND):
        scripts[f"remote command {command.name}"] = "#!/bin/sh\n" + command.inputs["create"]
    return scripts


@pytest.mark.parametrize("name,script", sorted(_scripts().items()))
def test_shellcheck_finds_nothing(tmp_path: Path, name: str, script: str) -> None:
    path = tmp_path / "script.sh"
    path.write_text(script)
    result = subprocess.run(["shellcheck", "--shell=sh", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{name}:\n{result.stdout}"

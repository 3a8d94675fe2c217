"""A release of the program with another baseline (lab.release): the program and its policy pack
both render the new baseline, and this checkout's baseline is this checkout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from config.policy import BaselinePolicy, SynGuardPolicy
from lab.release import REPO, release_dir

STRICTER = BaselinePolicy(syn_guard=SynGuardPolicy(burst=70))


def _policy_in(program: Path) -> BaselinePolicy:
    """`BaselinePolicy()` as the program at `program` constructs it, in a process of its own."""
    code = "from config.policy import BaselinePolicy; print(BaselinePolicy().model_dump_json())"
    output = subprocess.run([sys.executable, "-c", code], cwd=program, capture_output=True, text=True, check=True)
    return BaselinePolicy.model_validate(json.loads(output.stdout))


def test_this_checkouts_baseline_is_this_checkout(tmp_path: Path) -> None:
    assert release_dir(BaselinePolicy(), tmp_path) == REPO
    assert not list(tmp_path.iterdir())


def test_a_release_renders_its_own_baseline_in_program_and_pack(tmp_path: Path) -> None:
    release = release_dir(STRICTER, tmp_path)
    assert _policy_in(release) == STRICTER
    # The pack imports the same module: it judges the release by the release's baseline.
    assert (release / "policy" / "pack.py").read_text() == (REPO / "policy" / "pack.py").read_text()
    assert _policy_in(REPO) == BaselinePolicy()
    # Made once per baseline.
    assert release_dir(STRICTER, tmp_path) == release
    assert release_dir(BaselinePolicy(syn_guard=SynGuardPolicy(burst=80)), tmp_path) != release

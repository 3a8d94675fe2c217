"""A release of the program whose baseline differs from this checkout's: what a commit that changes
`config/policy.py` ships, for the lab to roll out.

The baseline is code, not stack config (no setting can change it), and the policy pack renders the
same code to judge a stack, so a release is a copy of the program and its pack in which
`BaselinePolicy()` gives the new baseline. The copy runs with this checkout's virtualenv and
toolchain.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from config.policy import BaselinePolicy

REPO = Path(__file__).resolve().parent.parent
# What `pulumi up` and `pulumi preview --policy-pack policy` read of a checkout.
PROGRAM_FILES = ("__main__.py", "Pulumi.yaml", "components", "config", "policy")
SHARED = (".venv", ".toolchain")


def release_dir(policy: BaselinePolicy, root: Path) -> Path:
    """The program directory that deploys `policy`: this checkout for its own baseline, else a
    release under `root` (made once per baseline)."""
    if policy == BaselinePolicy():
        return REPO
    text = policy.model_dump_json()
    target = root / hashlib.sha256(text.encode()).hexdigest()[:16]
    if (target / "complete").exists():
        return target
    copy_program(target)
    with (target / "config" / "policy.py").open("a") as module:
        module.write(_override(policy))
    (target / "complete").touch()
    return target


def copy_program_files(target: Path) -> None:
    """A fresh copy of the program's own files and its pack at `target`, nothing else."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in PROGRAM_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)


def copy_program(target: Path) -> None:
    """A fresh copy of the program and its pack at `target`, on this checkout's virtualenv and
    toolchain: what a commit ships, before its change is made to it."""
    copy_program_files(target)
    for name in SHARED:
        (target / name).symlink_to(REPO / name)


def _override(policy: BaselinePolicy) -> str:
    """The release's baseline: every part that differs becomes the new default of its field."""
    default = BaselinePolicy()
    fields = [
        f"    {name}: {type(part).__name__} = {type(part).__name__}.model_validate_json({part.model_dump_json()!r})"
        for name in BaselinePolicy.model_fields
        if (part := getattr(policy, name)) != getattr(default, name)
    ]
    return "\n\n# This release's baseline.\nclass BaselinePolicy(BaselinePolicy):  # type: ignore[no-redef]\n" + (
        "\n".join(fields) + "\n"
    )

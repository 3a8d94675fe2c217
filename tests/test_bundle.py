"""Bundles: what the remote command writes is byte for byte what the lab and the tests read."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from components.bundle import Bundle, RenderedFile

FILES = (
    RenderedFile(path="rules.v4", content="*filter\n-A X -j DROP\n\nCOMMIT\n\n"),
    RenderedFile(path="etc/ssh/sshd_config.d/x.conf", content="PasswordAuthentication no"),
    RenderedFile(path="empty", content=""),
    RenderedFile(path="apply.sh", content='#!/bin/sh\necho "$HOME `id`" \\\n', mode=0o755),
)


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(root)): (path.read_bytes(), path.stat().st_mode & 0o777)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_install_script_writes_exactly_what_write_to_writes(tmp_path: Path) -> None:
    bundle = Bundle(files=FILES)
    remote, local = tmp_path / "remote", tmp_path / "local"
    result = subprocess.run(
        ["sh", "-c", bundle.install_script(str(remote), "echo installed > marker")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr == ""
    bundle.write_to(local)
    written = _tree(remote)
    assert written.pop("marker")[0] == b"installed\n"
    assert written == _tree(local)
    assert _tree(local)["apply.sh"][1] == 0o755


def test_digest_depends_on_content_and_mode_not_order() -> None:
    bundle = Bundle(files=FILES)
    assert Bundle(files=tuple(reversed(FILES))).digest == bundle.digest
    changed = (*FILES[:-1], FILES[-1].model_copy(update={"mode": 0o700}))
    assert Bundle(files=changed).digest != bundle.digest
    edited = (FILES[0].model_copy(update={"content": "*filter\nCOMMIT\n"}), *FILES[1:])
    assert Bundle(files=edited).digest != bundle.digest


@pytest.mark.parametrize("path", ["/etc/passwd", "../escape", "a/../../b", ""])
def test_paths_stay_inside_the_bundle(path: str) -> None:
    with pytest.raises(ValidationError, match="relative path inside the bundle"):
        RenderedFile(path=path, content="x")


def test_content_cannot_end_the_heredoc_early() -> None:
    with pytest.raises(ValidationError, match="CLAWHOSTERS_EOF"):
        RenderedFile(path="x", content="a\nCLAWHOSTERS_EOF\nrm -rf /\n")

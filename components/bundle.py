"""A set of rendered files that a remote command writes onto the VPS and the lab reads locally."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, field_validator

_HEREDOC_END = "CLAWHOSTERS_EOF"


class RenderedFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Relative to the bundle directory; where a file finally lives is the bundle's own business.
    path: PurePosixPath
    content: str
    mode: int = 0o644

    @field_validator("path")
    @classmethod
    def _relative_inside(cls, path: PurePosixPath) -> PurePosixPath:
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise ValueError("must be a relative path inside the bundle")
        return path

    @field_validator("content")
    @classmethod
    def _heredoc_safe(cls, content: str) -> str:
        if _HEREDOC_END in content.splitlines():
            raise ValueError(f"content may not contain the line {_HEREDOC_END}")
        # Text files end with one newline, so the heredoc reproduces them byte for byte.
        return content if not content or content.endswith("\n") else content + "\n"


class Bundle(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    files: tuple[RenderedFile, ...]

    @property
    def digest(self) -> str:
        """sha256 over every path, mode and content: equal digests mean identical bundles."""
        hasher = hashlib.sha256()
        for item in sorted(self.files, key=lambda f: f.path):
            for part in (str(item.path), oct(item.mode), item.content):
                encoded = part.encode()
                hasher.update(len(encoded).to_bytes(8, "big") + encoded)
        return hasher.hexdigest()

    def file(self, path: str) -> RenderedFile:
        for item in self.files:
            if item.path == PurePosixPath(path):
                return item
        raise KeyError(path)

    def write_to(self, directory: Path) -> None:
        for item in self.files:
            target = directory / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(item.content)
            target.chmod(item.mode)

    def install_script(self, directory: str, then: str) -> str:
        """A POSIX shell script that writes the bundle to `directory`, then runs `then` there.

        Plain quoted heredocs keep a `pulumi preview` diff of the command readable line by line.
        """
        lines = ["set -eu", "umask 077", f"mkdir -p '{directory}'", f"cd '{directory}'"]
        for item in sorted(self.files, key=lambda f: f.path):
            parent = str(item.path.parent)
            if parent != ".":
                lines.append(f"mkdir -p '{parent}'")
            if item.content:
                lines.append(f"cat > '{item.path}.new' <<'{_HEREDOC_END}'")
                lines.append(item.content.removesuffix("\n"))
                lines.append(_HEREDOC_END)
            else:
                lines.append(f": > '{item.path}.new'")
            lines.append(f"chmod {item.mode:o} '{item.path}.new' && mv '{item.path}.new' '{item.path}'")
        lines.append(then)
        return "\n".join(lines) + "\n"

"""The Pulumi toolchain: the CLI, the Python language host and the providers, built from Go modules
(and the lab's object store, SeaweedFS, built the same way).

`versions.toml` pins every component; `python -m toolchain build` builds what is missing into a
cache outside the checkout and links the set into `.toolchain/` (which Pulumi.yaml's `plugins:`
names), `python -m toolchain lock` writes requirements.lock with each SDK at its plugin's version.
`cli_environment()` is how every caller (the lab, the tests, the provisioner, the workflows) runs
the CLI: these binaries only, offline, on a self-managed backend.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

TOOLCHAIN_DIR = Path(__file__).resolve().parent
REPO = TOOLCHAIN_DIR.parent
VERSIONS_FILE = TOOLCHAIN_DIR / "versions.toml"
# The set of binaries the checkout uses: a link into the cache, made by `python -m toolchain build`.
LINK = REPO / ".toolchain"
DEFAULT_CACHE = Path("/var/cache/clawhosters-toolchain")


class SdkPin(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    package: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")


class Component(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Semantic versions, or a release named major.minor (SeaweedFS).
    version: str = Field(pattern=r"^\d+\.\d+(\.\d+)?$")
    upstream: str = Field(pattern=r"^[a-z0-9./-]+@v\S+$")
    binaries: list[str] = Field(min_length=1)
    sdk: SdkPin | None = None


class Pins(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    components: dict[str, Component] = Field(min_length=1)

    @classmethod
    def load(cls, path: Path = VERSIONS_FILE) -> Pins:
        return cls.model_validate(tomllib.loads(path.read_text()))


def cache_root() -> Path:
    return Path(os.environ.get("CLAW_TOOLCHAIN_CACHE", str(DEFAULT_CACHE)))


def component_key(name: str, component: Component, go_version: str) -> str:
    """What a component's binaries depend on: its pin, the Go toolchain, its build module's files,
    the shared build scripts its build.sh calls and the shared Go modules its go.mod replaces in."""
    digest = hashlib.sha256()
    digest.update(f"{name}\0{component.model_dump_json()}\0{go_version}\0".encode())
    module_dir = TOOLCHAIN_DIR / name
    build_script = (module_dir / "build.sh").read_text()
    shared = [script for script in TOOLCHAIN_DIR.glob("*.sh") if f"../{script.name}" in build_script]
    go_mod = (module_dir / "go.mod").read_text()
    for shared_module in sorted(path for path in TOOLCHAIN_DIR.iterdir() if f"=> ../{path.name}\n" in go_mod):
        shared += [p for p in shared_module.rglob("*") if p.is_file()]
    for path in sorted([*(p for p in module_dir.rglob("*") if p.is_file()), *shared]):
        digest.update(f"{path.relative_to(TOOLCHAIN_DIR)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def bin_dir() -> Path:
    """The directory holding every binary of the pinned set (the CLI and all plugins)."""
    return LINK / "bin"


def cli_path() -> Path:
    return bin_dir() / "pulumi"


def missing_providers(*names: str) -> list[str]:
    """Which of these resource plugins the pinned set lacks."""
    return [name for name in names if not (bin_dir() / f"pulumi-resource-{name}").is_file()]


def cli_environment(pulumi_home: Path | None = None, backend_url: str | None = None) -> dict[str, str]:
    """Variables for running the CLI: exactly the pinned binaries, nothing fetched, no update check.

    The plugins come from Pulumi.yaml's `plugins:` paths (no version check, no warning); ambient
    plugins on PATH are ignored, so a stray binary elsewhere can never be picked up.
    """
    env = {
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_DISABLE_REGISTRY_RESOLVE": "true",
        "PULUMI_IGNORE_AMBIENT_PLUGINS": "true",
    }
    if pulumi_home is not None:
        env["PULUMI_HOME"] = str(pulumi_home)
    if backend_url:
        env["PULUMI_BACKEND_URL"] = backend_url
    return env

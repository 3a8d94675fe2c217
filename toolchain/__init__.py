"""The Pulumi toolchain: the CLI, the Python language host and the providers, built from Go modules
(and the lab's object store, SeaweedFS, built the same way).

`versions.toml` pins every component; `python -m toolchain build` builds what is missing into a
cache outside the checkout and links the set into `.toolchain/`: `bin/` as upstream's release
archive (the CLI with the language host beside it), `providers/` the provider builds, which
`python -m toolchain install` installs into the CLI's plugin cache, where the CLI looks for the
version each SDK asks for; `python -m toolchain lock` writes requirements.txt and
requirements-dev.txt with each SDK at its plugin's version.
`cli_environment()` is how every caller (the lab, the tests, the provisioner, the workflows) runs
the CLI: plugins from its cache only, nothing fetched, on a self-managed backend.
"""

from __future__ import annotations

import hashlib
import os
import pwd
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


def is_provider(binary: str) -> bool:
    """A provider plugin, which the CLI loads from its plugin cache; the others (the language host and
    the Python dynamic-provider plugin) it finds beside itself, as upstream's release archive ships
    them (IsPluginBundled in sdk/go/common/workspace/plugins.go)."""
    return binary.startswith("pulumi-resource-") and binary != "pulumi-resource-pulumi-python"


def bin_dir() -> Path:
    """The CLI and the plugins it finds beside itself, laid out as upstream's release archive: on PATH,
    this is a stock Pulumi installation."""
    return LINK / "bin"


def providers_dir() -> Path:
    """The provider builds, which `python -m toolchain install` installs into the CLI's plugin cache."""
    return LINK / "providers"


def built(binary: str) -> Path:
    """Where the pinned set holds one of its binaries."""
    return (providers_dir() if is_provider(binary) else bin_dir()) / binary


def cli_path() -> Path:
    return bin_dir() / "pulumi"


def cli_home() -> Path:
    """The CLI's home, whose `plugins/` is its plugin cache: $PULUMI_HOME, else `.pulumi` in the
    user's home directory as the password database names it (the CLI's own rule:
    sdk/go/common/util/pulumihome)."""
    return Path(os.environ.get("PULUMI_HOME") or Path(pwd.getpwuid(os.getuid()).pw_dir) / ".pulumi")


def plugin_cache() -> Path:
    """Where `pulumi plugin install` puts plugins and the CLI finds them (`resource-NAME-vVERSION/`)."""
    return cli_home() / "plugins"


def cli_environment(pulumi_home: Path | None = None, backend_url: str | None = None) -> dict[str, str]:
    """Variables for running the CLI: plugins from its cache only, nothing fetched, no update check.

    Each provider is the one installed in the plugin cache at the version its SDK asks for (setup.sh
    installs the toolchain's, `pulumi plugin install` upstream's); a missing one is an error, never a
    download. Plugins on PATH are ignored, so a stray binary there is never picked up; the language
    host is the one beside the CLI. A private `pulumi_home` (its own settings and stack selections)
    shares the installed plugin cache.
    """
    env = {
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_DISABLE_REGISTRY_RESOLVE": "true",
        "PULUMI_IGNORE_AMBIENT_PLUGINS": "true",
    }
    if pulumi_home is not None:
        share_plugin_cache(pulumi_home)
        env["PULUMI_HOME"] = str(pulumi_home)
    if backend_url:
        env["PULUMI_BACKEND_URL"] = backend_url
    return env


def share_plugin_cache(home: Path) -> None:
    """Make `home/plugins` the installed plugin cache (this process's), unless it is that already."""
    plugins = home / "plugins"
    if plugins.resolve() == plugin_cache().resolve():
        return
    home.mkdir(parents=True, exist_ok=True)
    plugins.symlink_to(plugin_cache(), target_is_directory=True)

"""Install the toolchain's providers into the CLI's plugin cache, as if the CLI had downloaded them.

Each provider SDK names its plugin and the version it asks for in its `pulumi-plugin.json`; the CLI
loads exactly that version from `$PULUMI_HOME/plugins/resource-NAME-vVERSION/` (default
`~/.pulumi`). `install()` puts the build of every component that provides a `pulumi-resource-*`
binary there with the pinned CLI's own `pulumi plugin install resource NAME VERSION --file BINARY`.
On a machine with internet, `pulumi plugin install resource NAME VERSION` fills the same place with
upstream's build instead, and the program runs unchanged.
"""

from __future__ import annotations

import filecmp
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from toolchain import Pins, built, cli_environment, cli_path, plugin_cache

MANIFEST = "pulumi-plugin.json"


class PluginError(RuntimeError):
    pass


class Manifest(BaseModel):
    """An SDK's `pulumi-plugin.json`: whether it drives a resource plugin, its name and version."""

    model_config = ConfigDict(frozen=True)

    resource: bool
    name: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Plugin:
    name: str
    version: str

    @property
    def binary(self) -> str:
        return f"pulumi-resource-{self.name}"

    @property
    def build(self) -> Path:
        """The toolchain's build of it."""
        return built(self.binary)

    def installed(self, cache: Path) -> Path:
        """Where the CLI looks for this plugin in a plugin cache."""
        return cache / f"resource-{self.name}-v{self.version}" / self.binary


def manifest(package: str) -> Manifest | None:
    """The `pulumi-plugin.json` of an installed Python package, if it ships one."""
    try:
        files = importlib.metadata.distribution(package).files or []
    except importlib.metadata.PackageNotFoundError as error:
        raise PluginError(f"the SDK {package} is not installed in this environment (run setup.sh)") from error
    # The SDK's own manifest sits at the top of its import package (pulumi_hcloud/pulumi-plugin.json).
    found = [file for file in files if file.name == MANIFEST and len(file.parts) == 2]
    return Manifest.model_validate(json.loads(found[0].read_text())) if found else None


def requested(pins: Pins) -> list[Plugin]:
    """The resource plugin each pinned SDK asks for."""
    plugins = []
    for name, component in pins.components.items():
        if component.sdk is None:
            continue
        asked = manifest(component.sdk.package)
        if asked is None or not asked.resource:
            continue
        if asked.name is None or asked.version is None:
            raise PluginError(f"{component.sdk.package}'s {MANIFEST} names no plugin name or version")
        plugin = Plugin(asked.name, asked.version)
        if plugin.binary not in component.binaries:
            raise PluginError(f"component {name!r} builds no {plugin.binary}, which {component.sdk.package} asks for")
        plugins.append(plugin)
    return plugins


def install(plugins: Iterable[Plugin]) -> list[tuple[Plugin, str]]:
    """Install each plugin into the CLI's plugin cache (this process's PULUMI_HOME) unless the same
    binary is there already; what was done to each."""
    cache = plugin_cache()
    done = []
    for plugin in plugins:
        target = plugin.installed(cache)
        # The CLI's own marker of an install cut off midway (pkg/util/atomicinstall).
        partial = target.parent.with_name(target.parent.name + ".partial")
        if target.is_file() and not partial.exists() and filecmp.cmp(target, plugin.build, shallow=False):
            done.append((plugin, "installed already"))
            continue
        # A different binary at that version (an earlier build, or upstream's) is replaced.
        how = "replaced" if target.exists() else "installed"
        command = [str(cli_path()), "plugin", "install", "resource", plugin.name, plugin.version]
        result = subprocess.run(
            [*command, "--file", str(plugin.build), "--reinstall"],
            env={**os.environ, **cli_environment()},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise PluginError(f"{' '.join(command)} failed: {result.stderr.strip() or result.stdout.strip()}")
        done.append((plugin, how))
    return done


def main() -> int:
    try:
        done = install(requested(Pins.load()))
    except PluginError as error:
        print(f"toolchain: {error}", file=sys.stderr)
        return 1
    for plugin, how in done:
        print(f"toolchain: plugin {plugin.name} {plugin.version}: {how} ({plugin.installed(plugin_cache())})")
    return 0

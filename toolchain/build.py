"""Build the pinned toolchain into the cache and link the set into `.toolchain/`.

Each component is built once per key (its pin, the Go version and its build module's files) into
`<cache>/<name>/<version>-<key>/`; an existing, complete directory is reused. The set directory
`<cache>/sets/<set key>/` holds every binary of every component (hard links): the providers in
`providers/`, the CLI and everything it finds beside itself in `bin/`; `.toolchain` points at it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from toolchain import LINK, TOOLCHAIN_DIR, Component, Pins, cache_root, component_key, is_provider

# Written last into a component's directory: its presence means the build finished.
COMPLETE_MARK = ".complete"
# How a set directory is laid out; a new layout gets new set directories.
SET_LAYOUT = "bin and providers, hard links"


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class Built:
    name: str
    directory: Path
    seconds: float | None  # None: taken from the cache


def go_version() -> str:
    try:
        return subprocess.run(["go", "env", "GOVERSION"], check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as error:
        raise BuildError(f"the Go toolchain is needed to build the Pulumi toolchain: {error}") from error


def go_environment() -> dict[str, str]:
    # The committed go.sum files are authoritative; nothing may be re-resolved or edited at build time.
    return {**os.environ, "GOFLAGS": "-mod=readonly -trimpath", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}


def build_component(name: str, component: Component, cache: Path, go: str) -> Built:
    target = cache / name / f"{component.version}-{component_key(name, component, go)}"
    if (target / COMPLETE_MARK).is_file():
        return Built(name, target, None)
    script = TOOLCHAIN_DIR / name / "build.sh"
    if not script.is_file():
        raise BuildError(f"component {name!r}: no build script at {script}")
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # Build beside the target and rename, so a killed build never leaves a directory that looks complete.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as scratch:
        out = Path(scratch) / "out"
        out.mkdir()
        env = {**go_environment(), "VERSION": component.version}
        result = subprocess.run(["bash", str(script), str(out)], cwd=script.parent, env=env, check=False)
        if result.returncode != 0:
            raise BuildError(f"component {name!r}: {script} failed with exit status {result.returncode}")
        missing = [binary for binary in component.binaries if not os.access(out / binary, os.X_OK)]
        if missing:
            raise BuildError(f"component {name!r}: the build produced no executable {', '.join(missing)}")
        (out / COMPLETE_MARK).write_text(f"{component.upstream}\n")
        shutil.rmtree(target, ignore_errors=True)
        out.rename(target)
    return Built(name, target, time.monotonic() - started)


def link_set(built: list[Built], pins: Pins, cache: Path) -> Path:
    """One directory holding every binary of the pinned set, and `.toolchain` pointing at it.

    The binaries are hard links, not symbolic ones: the CLI looks for its bundled language host
    beside its own executable with symbolic links resolved (sdk/go/common/workspace/plugins.go), as
    in upstream's release archive, where they share one directory. The providers are kept apart, so
    that `bin/` on PATH offers the CLI no provider of whatever version."""
    names = [SET_LAYOUT, *(str(b.directory) for b in built)]
    set_key = hashlib.sha256("\0".join(names).encode()).hexdigest()[:16]
    set_dir = cache / "sets" / set_key
    if not set_dir.is_dir():
        staging = Path(tempfile.mkdtemp(dir=cache, prefix=".set."))
        for kind in ("bin", "providers"):
            (staging / kind).mkdir()
        for item in built:
            for binary in pins.components[item.name].binaries:
                kind = "providers" if is_provider(binary) else "bin"
                (staging / kind / binary).hardlink_to(item.directory / binary)
        set_dir.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(set_dir)
    # Readable by every user, as an installed program is: a confined program (fleet.sandbox) runs the
    # language host's exec script beside the CLI. mkdtemp made it private.
    set_dir.chmod(0o755)
    if LINK.is_symlink() or LINK.exists():
        if LINK.resolve() == set_dir.resolve():
            return set_dir
        LINK.unlink()
    LINK.symlink_to(set_dir)
    return set_dir


def build_all(pins: Pins) -> list[Built]:
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    go = go_version()
    built = [build_component(name, component, cache, go) for name, component in pins.components.items()]
    link_set(built, pins, cache)
    return built


def main() -> int:
    pins = Pins.load()
    try:
        built = build_all(pins)
    except BuildError as error:
        print(f"toolchain: {error}", file=sys.stderr)
        return 1
    for item in built:
        how = "cached" if item.seconds is None else f"built in {item.seconds:.0f} s"
        print(f"toolchain: {item.name} {pins.components[item.name].version}: {how} ({item.directory})")
    print(f"toolchain: {LINK} -> {LINK.resolve()}")
    return 0

"""The state directory: one JSON file, replaced atomically, so a crash leaves the old or the new state."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lab.hcloud_api.records import Cloud

STATE_FILE = "cloud.json"


def load(state_dir: Path) -> Cloud:
    path = state_dir / STATE_FILE
    if not path.exists():
        return Cloud()
    return Cloud.model_validate_json(path.read_bytes())


def save(state_dir: Path, cloud: Cloud) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=state_dir, prefix=f".{STATE_FILE}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(cloud.model_dump_json().encode())
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).replace(state_dir / STATE_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)

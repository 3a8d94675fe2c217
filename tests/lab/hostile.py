"""Pull requests' programs as the preview gets them: a copy of this checkout's program in a directory of
its own, with a virtualenv of its own that the confined user can read (the workflow installs one from
the pull request's lock; here the same packages come from this checkout's virtualenv), and, for a
hostile one, code that tries from inside the preview everything the confinement is there to stop.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from lab.release import REPO, copy_program_files

# Debian's interpreter: readable by every user, as the workflow runner's is.
SYSTEM_PYTHON = "/usr/bin/python3"
# The provisioning key, unsecreted into the baseline script: the diff the comment shows.
LEAK = (
    "create=pulumi.Output.unsecret(provisioning_key.private_key_openssh).apply("
    'lambda key: scripts.baseline + "# " + key),'
)


def program_copy(target: Path, venv: Path, hostile: dict[str, Any] | None = None) -> Path:
    """A copy of the program at `target` that any user may read, its virtualenv `venv` (made once,
    `virtualenv`); with `hostile`, the attempts it makes (`{"report": PATH, "reach": {what: [host,
    port]}, "write": {what: path}, "read": {what: path}}`, `{parent}` in a path standing for the
    program's parent process) and the leak of its stack's private key into its diff."""
    copy_program_files(target)
    (target / ".venv").symlink_to(venv)
    if hostile is not None:
        instance = target / "components" / "instance.py"
        text = instance.read_text()
        assert text.count("create=scripts.baseline,") == 1
        instance.write_text(text.replace("create=scripts.baseline,", LEAK))
        with (target / "__main__.py").open("a") as program:
            program.write(_attempts(hostile))
    _readable(target)
    return target


def _readable(path: Path) -> None:
    subprocess.run(["chmod", "-R", "a+rX", str(path)], check=True)
    for parent in path.parents:
        if parent != Path("/"):
            parent.chmod(parent.stat().st_mode | 0o005)


def virtualenv(venv: Path) -> Path:
    """A virtualenv on Debian's interpreter with this checkout's packages, readable by every user."""
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(f'python{sys.version_info[0]}.{sys.version_info[1]}')"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    site = venv / "lib" / version / "site-packages"
    shutil.rmtree(site)
    shutil.copytree(REPO / ".venv" / "lib" / version / "site-packages", site, symlinks=True)
    _readable(venv)
    return venv


def _attempts(hostile: dict[str, Any]) -> str:
    return f"""

# What a hostile pull request adds: it tries, and writes down what happened.
import json as _json, os as _os, socket as _socket
from pathlib import Path as _Path

_plan = _json.loads({json.dumps(json.dumps(hostile))})
_report = {{"uid": _os.getuid(), "variables": sorted(_os.environ)}}


def _attempt(what, action):
    try:
        action()
    except OSError as error:
        _report[what] = "refused: " + type(error).__name__
    else:
        _report[what] = "done"


for _what, (_host, _port) in _plan["reach"].items():
    _attempt("reach " + _what, lambda h=_host, p=_port: _socket.create_connection((h, p), timeout=3).close())
for _what, _path in _plan["write"].items():
    _attempt("write " + _what, lambda p=_path: _Path(p).open("a").close())
for _what, _path in _plan["read"].items():
    _path = _path.replace("{{parent}}", str(_os.getppid()))
    _attempt("read " + _what, lambda p=_path: _Path(p).read_bytes())
_Path(_plan["report"]).write_text(_json.dumps(_report))
"""

"""The confinement of a pull request's program (fleet/sandbox.py), on this machine's real setpriv and
packet filter: the interpreter runs as the unprivileged user with only the stack's config, and the
filter leaves that user loopback alone, applied any number of times."""

from __future__ import annotations

import json
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet import sandbox
from tests.lab.hostile import SYSTEM_PYTHON
from tests.netns import network_namespace

USER = "nobody"


@pytest.fixture
def readable() -> Iterator[Path]:
    """A directory every user can read: a confined interpreter must reach its virtualenv."""
    directory = Path(tempfile.mkdtemp(prefix="claw-sandbox-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def test_the_confined_interpreter_runs_as_the_user_with_the_stacks_config_only(readable: Path) -> None:
    venv = readable / "program-venv"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
    confined = sandbox.confined_virtualenv(venv, readable / "confined", USER)
    script = "import json, os; print(json.dumps([os.getuid(), os.getgroups(), sorted(os.environ)]))"
    caller = {"PATH": "/usr/bin:/bin", "PULUMI_CONFIG": "{}", "HCLOUD_TOKEN": "x" * 64, "CLAW_REVIEW_TOKEN": "y"}
    answer = subprocess.run(
        [str(confined / "bin" / "python"), "-c", script], env=caller, capture_output=True, text=True, check=True
    )
    uid, groups, variables = json.loads(answer.stdout)
    assert (uid, groups) == (65534, [])
    assert set(variables) <= {"PATH", "HOME", "VIRTUAL_ENV", "PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS", "LC_CTYPE"}
    assert "PULUMI_CONFIG" in variables


def test_the_packet_filter_leaves_the_user_loopback_only_and_applies_once() -> None:
    apply = f"from fleet import sandbox; sandbox.apply_packet_filter({USER!r})"
    # A listener on each address, then a connection to each: what reaches it, what is refused.
    probe = (
        "import socket\n"
        "for address in ('127.0.0.1', '198.51.100.1'):\n"
        "    server = socket.create_server((address, 0))\n"
        "    try:\n"
        "        socket.create_connection(server.getsockname(), timeout=2).close(); print(address, 'reached')\n"
        "    except OSError as error:\n"
        "        print(address, type(error).__name__)\n"
    )
    with network_namespace() as run:
        run("ip", "link", "set", "lo", "up")
        run("ip", "addr", "add", "198.51.100.1/32", "dev", "lo")
        for _ in range(2):
            run(sys.executable, "-c", apply)
        for tool in ("iptables-save", "ip6tables-save"):
            owned = [line for line in run(tool, "-t", "filter").stdout.splitlines() if "--uid-owner" in line]
            assert len(owned) == 2, owned
        account = pwd.getpwnam(USER)
        ids = (f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups")
        confined = run("setpriv", *ids, SYSTEM_PYTHON, "-c", probe)
        # An address of the host's own goes over `lo` too: it is refused all the same.
        assert confined.stdout.split("\n")[:2] == ["127.0.0.1 reached", "198.51.100.1 ConnectionRefusedError"]
        root = run(SYSTEM_PYTHON, "-c", probe)
        assert root.stdout.split("\n")[:2] == ["127.0.0.1 reached", "198.51.100.1 reached"], "only the user is held"


@pytest.mark.parametrize("name", ["../evil", "a b", "", "x\ny"])
def test_a_project_name_of_the_pull_requests_that_is_not_plain_is_refused(tmp_path: Path, name: str) -> None:
    from fleet import stacks

    (tmp_path / "Pulumi.yaml").write_text(json.dumps({"name": name, "plugins": {"providers": []}}))
    with pytest.raises(ValueError, match="`name` must be a plain project name"):
        stacks.write_project_file(tmp_path, tmp_path, confined=tmp_path / "venv")

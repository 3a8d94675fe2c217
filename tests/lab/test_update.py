"""Updates of a deployed stack through the real CLI: only the commands whose inputs changed run, and
unless the gateway itself changed, Docker and the gateway keep running; sessions, connections and
bans survive. A baseline change is a release of the program (lab.release), as a commit would be."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from config.loader import StackSettings
from lab.netns import connect_from
from lab.release import copy_program
from lab.topology import ATTACKER, CLIENT
from lab.world import GATEWAY_VERSIONS, Lab, Step, wait_until
from tests.lab.helpers import provisioner_session, ssh

pytestmark = pytest.mark.usefixtures("restore_settings")


def _changed(steps: list[Step]) -> dict[str, str]:
    return {step.name.removeprefix("customer-lab-"): step.action for step in steps if step.action != "unchanged"}


def _runtime(lab: Lab) -> dict[str, str]:
    """What a restart of Docker or of the gateway container would change."""
    container = lab.docker("inspect", "--format", "{{.Id}} {{.State.StartedAt}}", "openclaw-gateway").stdout.strip()
    units = {
        unit: lab.host("systemctl", "show", "--property=MainPID,ActiveEnterTimestamp", unit).stdout.strip()
        for unit in ("docker.service", "containerd.service", "clawhosters-gateway.service", "fail2ban.service")
    }
    return {"container": container, **units}


@contextmanager
def _open_connections(lab: Lab) -> Iterator[tuple[object, socket.socket]]:
    """An SSH session of the provisioner and an idle TCP connection to the gateway, both open."""
    gateway = connect_from(CLIENT.namespace, lab.ipv4, lab.policy.inbound.gateway_port, 5)
    with provisioner_session(lab) as transport, gateway:
        yield transport, gateway


def _still_open(transport: object, gateway: socket.socket) -> None:
    channel = transport.open_session()  # type: ignore[attr-defined]
    channel.exec_command("true")
    assert channel.recv_exit_status() == 0, "the SSH session did not survive"
    gateway.sendall(b"GET / HTTP/1.0\r\n\r\n")
    assert gateway.recv(64).split(b" ")[1] == b"401", "the gateway connection did not survive"


def _with_customer(lab: Lab, **changes: object) -> StackSettings:
    settings = lab.default_settings()
    return settings.model_copy(update={"customer": settings.customer.model_copy(update=changes)})


def test_a_baseline_tunable_reruns_only_the_baseline_and_keeps_bans_and_sessions(lab: Lab, stranger_key: Path) -> None:
    for _ in range(lab.policy.fail2ban.maxretry):
        assert ssh(ATTACKER.namespace, lab.ipv4, stranger_key).returncode == 255
    jail = lab.policy.fail2ban.jail
    wait_until("the ban", lambda: ATTACKER.ipv4 in lab.fail2ban("status", jail).stdout, timeout=20)
    try:
        before = _runtime(lab)
        guard = lab.policy.syn_guard
        stricter = lab.policy.model_copy(update={"syn_guard": guard.model_copy(update={"burst": guard.burst + 10})})
        with _open_connections(lab) as (transport, gateway):
            steps = lab.deploy(policy=stricter)
            _still_open(transport, gateway)
        assert _changed(steps) == {"baseline": "replace"}
        assert _runtime(lab) == before
        assert f"--hashlimit-burst {guard.burst + 10}" in lab.vps("iptables-save").stdout
        assert ATTACKER.ipv4 in lab.fail2ban("status", jail).stdout
        assert lab.http_status(lab.ipv4, lab.policy.inbound.gateway_port, ATTACKER.namespace) == 0
    finally:
        lab.fail2ban("unban", "--all")


@pytest.mark.parametrize("change", ["customer keys", "provisioner networks"])
def test_host_settings_rerun_only_the_baseline(lab: Lab, customer_key: Path, change: str) -> None:
    if change == "customer keys":
        key = customer_key.with_suffix(".pub").read_text().strip()
        settings = _with_customer(lab, ssh_enabled=True, ssh_public_keys=(key,))
    else:
        platform = lab.default_settings().platform
        cidrs = (*platform.provisioner_cidrs, "198.51.100.128/28")
        settings = lab.default_settings().model_copy(
            update={"platform": platform.model_copy(update={"provisioner_cidrs": cidrs})}
        )
    before = _runtime(lab)
    with _open_connections(lab) as (transport, gateway):
        steps = lab.deploy(settings)
        _still_open(transport, gateway)
    assert _changed(steps) == {"baseline": "replace"}
    assert _runtime(lab) == before


def test_a_new_gateway_image_replaces_only_the_gateway_and_keeps_its_data(lab: Lab) -> None:
    port = lab.policy.inbound.gateway_port
    instance = lab.http_get(lab.ipv4, port, CLIENT.namespace, auth=True, path="/instance-id")
    docker = lab.host("systemctl", "show", "--property=MainPID", "docker.service").stdout
    steps = lab.deploy(_with_customer(lab, gateway_image=lab.gateway_image(GATEWAY_VERSIONS[1])))
    assert _changed(steps) == {"gateway": "replace"}
    lab.wait_for_gateway()
    version = lab.http_get(lab.ipv4, port, CLIENT.namespace, auth=True, path="/version")
    assert version == (200, GATEWAY_VERSIONS[1] + "\n")
    assert lab.http_get(lab.ipv4, port, CLIENT.namespace, auth=True, path="/instance-id") == instance
    assert lab.host("systemctl", "show", "--property=MainPID", "docker.service").stdout == docker


def test_an_unchanged_stack_runs_nothing(lab: Lab) -> None:
    assert _changed(lab.deploy(lab.default_settings())) == {}


EDIT_ONCE_PER_SERVER_SCRIPTS = """

# A later commit's edit of the once-per-server scripts.
WAIT_FOR_CLOUD_INIT = WAIT_FOR_CLOUD_INIT + ": edited\\n"
_rendered_packages = _install_packages_script


def _install_packages_script() -> str:
    return _rendered_packages() + ": edited\\n"
"""


def test_an_edit_of_the_once_per_server_scripts_reaches_no_existing_server(lab: Lab, tmp_path: Path) -> None:
    """The stated choice (components/instance.py): wait-cloud-init and packages run once per
    server; an edit of their scripts is for new servers. A rollout of it runs nothing on an existing
    one, and the policy pack lets it through although the stack keeps the scripts it ran."""
    program = tmp_path / "edited"
    copy_program(program)
    with (program / "components" / "instance.py").open("a") as module:
        module.write(EDIT_ONCE_PER_SERVER_SCRIPTS)
    before = {step: lab.command_inputs(step)["create"] for step in ("wait-cloud-init", "packages")}
    assert _changed(lab.deploy(program_dir=program)) == {}
    assert {step: lab.command_inputs(step)["create"] for step in before} == before
    assert ": edited" not in before["packages"]

"""A fresh deploy onto the stock machine: every remote command of the stack runs once, over SSH as
pulumi-command runs it, and each Debian 12 default that broke the first real `pulumi up` is met."""

from __future__ import annotations

import subprocess

import pytest

from components.instance import WAIT_FOR_CLOUD_INIT
from lab.replay import CommandFailed, RemoteCommand
from lab.topology import CLIENT, PROVISIONER, VPS_PEER
from lab.world import Lab, in_ns, run

COMMANDS = ("wait-cloud-init", "packages", "baseline", "gateway")


def _commands(lab: Lab) -> dict[str, RemoteCommand]:
    return {name.removeprefix("customer-lab-"): state.command for name, state in lab.stack.commands.items()}


def test_every_command_ran_once_in_order(lab: Lab) -> None:
    assert [(step.name.removeprefix("customer-lab-"), step.action) for step in lab.first_steps] == [
        (name, "create") for name in COMMANDS
    ]
    port = lab.policy.inbound.gateway_port
    assert lab.http_status(VPS_PEER.ipv4, port, CLIENT.namespace) == 401
    assert lab.http_status(VPS_PEER.ipv4, port, CLIENT.namespace, auth=True) == 200
    assert lab.stack.outputs["gateway_url"] == f"http://{VPS_PEER.ipv4}:{port}/"


def test_a_stock_sshd_refuses_environment_requests(lab: Lab) -> None:
    """Why the password travels on stdin: sshd accepts only AcceptEnv names (Debian: LANG LC_*),
    and the provider fails a command whose env request is refused."""
    connection = _commands(lab)["wait-cloud-init"].connection
    with pytest.raises(CommandFailed, match="setenv failed"):
        lab.runner.run(connection, "true", {"GATEWAY_PASSWORD": "never-sent"}, None)
    # A name in AcceptEnv goes through (PAM's locale settings may still override its value).
    assert lab.runner.run(connection, "echo accepted", {"LANG": "C.UTF-8"}, None)[0] == "accepted"


def test_the_password_is_in_no_command_text_and_no_process_list(lab: Lab) -> None:
    gateway = _commands(lab)["gateway"]
    assert gateway.stdin == lab.password
    assert lab.password not in (gateway.create or "")
    assert not gateway.environment


def test_user_data_passes_cloud_inits_own_schema_check(lab: Lab) -> None:
    seed = "/var/lib/cloud/seed/nocloud/user-data"
    checked = lab.host("cloud-init", "schema", "--config-file", seed, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    status = lab.host("cloud-init", "status", "--long", check=False)
    assert "status: done" in status.stdout, status.stdout


def test_sshd_presents_only_the_pinned_host_key(lab: Lab) -> None:
    pinned = _commands(lab)["gateway"].connection.host_key
    assert pinned is not None
    scanned = run(in_ns(PROVISIONER.namespace, "ssh-keyscan", "-T", "5", VPS_PEER.ipv4), check=False).stdout
    keys = [line.split(maxsplit=1)[1] for line in scanned.splitlines() if line and not line.startswith("#")]
    assert keys == [" ".join(pinned.split()[:2])]


def test_the_wait_step_outlasts_a_module_error_until_cloud_init_finishes(lab: Lab) -> None:
    """cloud-init reports an error in an early stage while its final stage still runs: the step
    waits for boot-finished instead of failing (or returning) at once."""
    finished = "/var/lib/cloud/instance/boot-finished"
    status = "/run/cloud-init/status.json"
    lab.host("cp", "-a", status, f"{status}.saved")
    lab.host("mv", finished, f"{finished}.saved")
    running_with_error = (
        '{"v1": {"stage": "modules-final", "datasource": "DataSourceNoCloud",'
        ' "init": {"errors": ["a module failed"], "start": 1, "finished": 2},'
        ' "modules-final": {"errors": [], "start": 3, "finished": null}}}'
    )
    try:
        lab.host("sh", "-c", f"cat > {status}", stdin=running_with_error)
        assert lab.host("cloud-init", "status", check=False).stdout.startswith("status: error")
        waiting = lab.host_process("sh", "-c", WAIT_FOR_CLOUD_INIT)
        try:
            waiting.wait(timeout=6)
            pytest.fail(f"the wait step returned before boot-finished: {waiting.communicate()}")
        except subprocess.TimeoutExpired:
            pass
        lab.host("mv", f"{finished}.saved", finished)
        assert waiting.wait(timeout=10) == 0
    finally:
        lab.host("sh", "-c", f"[ -e {finished} ] || mv {finished}.saved {finished}")
        lab.host("mv", f"{status}.saved", status)

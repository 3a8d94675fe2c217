"""A fresh `pulumi up` onto the stock machine, through the real CLI and providers: the hcloud
provider creates the server at Hetzner (the lab's), the command provider runs every remote command
once over SSH, and each Debian 12 default that broke the first real `pulumi up` is met."""

from __future__ import annotations

import subprocess

import pytest

from components.instance import WAIT_FOR_CLOUD_INIT
from lab.topology import CLIENT, PLATFORM_ZONE, PROVISIONER
from lab.world import CUSTOMER_ID, Lab, in_ns, run

COMMANDS = ("wait-cloud-init", "packages", "baseline", "gateway")
COMMAND = "command:remote:Command"


def test_every_resource_is_created_once_and_the_commands_in_order(lab: Lab) -> None:
    assert {step.action for step in lab.first_steps} == {"create"}
    commands = [step.name.removeprefix("customer-lab-") for step in lab.first_steps if step.type == COMMAND]
    assert commands == list(COMMANDS)
    types = {step.type for step in lab.first_steps}
    assert {"hcloud:index/server:Server", "hcloud:index/firewall:Firewall"} <= types
    port = lab.policy.inbound.gateway_port
    assert lab.http_status(lab.ipv4, port, CLIENT.namespace) == 401
    assert lab.http_status(lab.ipv4, port, CLIENT.namespace, auth=True) == 200
    assert lab.outputs["gateway_url"] == f"http://{lab.ipv4}:{port}/"
    # The customer's name in the platform's zone (the DNS project's records), as the client's resolver
    # answers it, and the gateway reached by that name on both families.
    hostname = f"{CUSTOMER_ID}.{PLATFORM_ZONE}"
    assert lab.outputs["hostname"] == hostname
    assert lab.resolve(hostname) == {4: [lab.ipv4], 6: [lab.ipv6]}
    for family in ("-4", "-6"):
        curl = ["curl", family, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "3"]
        assert run(in_ns(CLIENT.namespace, *curl, f"http://{hostname}:{port}/"), check=False).stdout == "401"


def test_the_server_is_the_one_hetzner_created_with_the_firewall(lab: Lab) -> None:
    server = lab.hetzner().servers.get_by_id(lab.server_id)
    assert server.status == "running"
    assert server.public_net.ipv4.ip == lab.ipv4
    assert [firewall.firewall.id for firewall in server.public_net.firewalls] == [int(lab.outputs["firewall_id"])]
    # cloud-init took the machine's identity from Hetzner's metadata service, not from a seed.
    assert lab.host("cloud-init", "query", "platform").stdout.strip() == "hetzner"
    assert lab.host("hostname").stdout.strip() == server.name


def test_a_stock_sshd_refuses_environment_requests(lab: Lab) -> None:
    """Why the password travels on stdin: sshd accepts only AcceptEnv names (Debian: LANG LC_*),
    and the command provider fails a command whose environment request is refused
    (tests/engine/test_remote_command.py). OpenSSH's client ignores a refusal: the variable is
    simply not there."""
    login = [
        "ssh",
        *("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
        *("-o", "IdentitiesOnly=yes", "-i", str(lab.provisioning_key)),
        *("-o", "SetEnv=GATEWAY_PASSWORD=never-sent LC_LAB=accepted"),
        f"root@{lab.ipv4}",
        'echo "[$GATEWAY_PASSWORD] [$LC_LAB]"',
    ]
    answer = run(in_ns(PROVISIONER.namespace, *login), timeout=30).stdout.strip()
    assert answer == "[] [accepted]"


def test_the_password_is_in_no_command_text_and_no_process_list(lab: Lab) -> None:
    gateway = lab.command_inputs("gateway")
    assert gateway["stdin"] == lab.password
    assert lab.password not in gateway["create"]
    assert not gateway.get("environment")


def test_user_data_passes_cloud_inits_own_schema_check(lab: Lab) -> None:
    checked = lab.host("cloud-init", "schema", "--system", check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    status = lab.host("cloud-init", "status", "--long", check=False)
    assert "status: done" in status.stdout, status.stdout


def test_sshd_presents_only_the_pinned_host_key(lab: Lab) -> None:
    pinned = lab.command_inputs("gateway")["connection"]["hostKey"]
    scanned = run(in_ns(PROVISIONER.namespace, "ssh-keyscan", "-T", "5", lab.ipv4), check=False).stdout
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
        '{"v1": {"stage": "modules-final", "datasource": "DataSourceHetzner",'
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

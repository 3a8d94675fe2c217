"""A customer's server is never lost by a config edit: protection, refusals and decommissioning,
asserted on the resource graph under Pulumi's mocks, with `Cloud` as what Hetzner already holds."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from components.instance import snapshot_expiry
from components.offline import (
    FIREWALL,
    SERVER,
    SNAPSHOT,
    Cloud,
    CloudFirewall,
    CloudServer,
    Graph,
    baseline_firewall,
    build_graph,
    run_program,
)
from components.safety import GRACEFUL_RESIZE_ENV
from config import BaselinePolicy, ConfigError, CustomerConfig, PlatformConfig, StackSettings
from tests.test_policy import Pack, graph_of
from tests.test_policy import packs as packs  # a fixture, used by name

IMAGE = "ghcr.io/openclaw/gateway:1.4.2@sha256:" + "cd" * 32
POLICY = BaselinePolicy()
LABELS = {"customer": "acme", "managed-by": "clawhosters"}
SHARED_ID = 4242
DEDICATED_ID = 11
STACK_CONFIG = {"clawhosters:customer_id": "acme", "clawhosters:gateway_image": IMAGE}


def settings(platform: PlatformConfig | None = None, **customer: Any) -> StackSettings:
    return StackSettings(
        customer=CustomerConfig.model_validate({"customer_id": "acme", "gateway_image": IMAGE, **customer}),
        platform=platform or PlatformConfig(),
    )


def mode(firewall_mode: str) -> PlatformConfig:
    shared = SHARED_ID if firewall_mode != "dedicated" else None
    return PlatformConfig.model_validate({"firewall_mode": firewall_mode, "shared_firewall_id": shared})


def cloud(*attached: int, location: str = "fsn1", dedicated: bool = True) -> Cloud:
    """An existing customer server with these firewalls attached, the shared firewall, and (if
    `dedicated`) the customer's own firewall."""
    firewalls = [baseline_firewall(SHARED_ID, POLICY)]
    if dedicated:
        own = baseline_firewall(DEDICATED_ID, POLICY, name="claw-acme-baseline")
        firewalls.append(CloudFirewall(id=own.id, name=own.name, rules=own.rules, labels=LABELS))
    server = CloudServer(name="claw-acme", location=location, firewall_ids=attached, labels=LABELS)
    return Cloud(servers=(server,), firewalls=tuple(firewalls))


def refused(config: StackSettings, existing: Cloud | None, *expected: str) -> str:
    with pytest.raises(ConfigError) as caught:
        build_graph(config, cloud=existing)
    message = str(caught.value)
    for part in expected:
        assert part in message, message
    return message


# --- protection ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(settings())


def test_server_and_dedicated_firewall_are_protected_in_pulumi_and_at_hetzner(graph: Graph) -> None:
    server = graph.one(SERVER)
    assert server.protect
    assert server.inputs["deleteProtection"] is True
    assert server.inputs["rebuildProtection"] is True
    assert graph.one(FIREWALL).protect
    assert graph.of_type(SNAPSHOT) == []


def test_a_resize_keeps_the_disk_and_changes_nothing_else(graph: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    assert graph.one(SERVER).inputs["keepDisk"] is True
    monkeypatch.setenv(GRACEFUL_RESIZE_ENV, "1")
    resized = build_graph(settings(server_type="cx33"), cloud=cloud()).one(SERVER).inputs
    assert resized == {**graph.one(SERVER).inputs, "serverType": "cx33"}


def on(server_type: str, disk_gb: int, location: str = "fsn1", status: str = "off") -> Cloud:
    """The customer's existing server, of this type and disk size (off, as a resize finds it)."""
    server = CloudServer(
        "claw-acme", location, (DEDICATED_ID,), LABELS, server_type=server_type, disk_gb=disk_gb, status=status
    )
    return Cloud(servers=(server,), firewalls=cloud().firewalls)


def test_a_type_not_sold_in_the_location_is_refused_naming_both() -> None:
    refused(settings(location="ash"), None, "clawhosters:server_type", "cx23", "ash", "clawhosters:location")
    assert build_graph(settings(location="ash", server_type="cpx11")).one(SERVER).inputs["location"] == "ash"
    refused(settings(server_type="cpx11"), None, "does not sell cpx11 in fsn1", "orderable in ash, hil, sin")


def test_a_deprecated_type_is_refused_for_a_new_server_and_kept_by_a_running_one() -> None:
    platform = PlatformConfig(server_types=("cx22", "cx23"))
    refused(settings(platform, server_type="cx22"), None, "does not sell cx22 in fsn1", "orderable in no location")
    kept = build_graph(settings(platform, server_type="cx22"), cloud=on("cx22", 40)).one(SERVER)
    assert kept.inputs["serverType"] == "cx22"


def test_a_type_hetzner_has_run_out_of_is_refused_for_a_new_server_and_kept_by_a_running_one() -> None:
    sold_out = frozenset({("cpx22", "fsn1"), ("cpx32", "fsn1")})
    refused(settings(server_type="cpx22"), Cloud(sold_out=sold_out), "does not sell cpx22 in fsn1", "in hel1, nbg1")
    running = on("cpx22", 80)
    existing = Cloud(servers=running.servers, firewalls=running.firewalls, sold_out=sold_out)
    assert build_graph(settings(server_type="cpx22"), cloud=existing).one(SERVER).inputs["serverType"] == "cpx22"
    refused(settings(server_type="cpx32"), existing, "does not sell cpx32 in fsn1")


def test_a_resize_hetzner_would_refuse_is_refused_before_the_server_is_touched() -> None:
    # keep_disk: the disk stays 80 GB; a type with a smaller one cannot take the server.
    refused(settings(server_type="cx23"), on("cx33", 80), "80 GB disk", "cx23 has 40 GB")
    refused(settings(server_type="cax21"), on("cx33", 80), "cx33 (x86)", "cax21 is arm", "architecture")
    # Back down to a type whose disk still holds it: 40 GB kept from a resize of a cx23.
    assert build_graph(settings(server_type="cx23"), cloud=on("cx33", 40)).one(SERVER).inputs["serverType"] == "cx23"
    # Refused whatever the power state: the refusal comes before the server is shut down.
    refused(settings(server_type="cx23"), on("cx33", 80, status="running"), "80 GB disk")


def test_a_running_server_is_resized_only_by_tooling_that_shuts_it_down_gracefully(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(GRACEFUL_RESIZE_ENV, raising=False)
    refused(
        settings(server_type="cx33"),
        on("cx23", 40, status="running"),
        "clawhosters:server_type: server claw-acme is running",
        "cut its power",
        "python -m fleet up",
    )
    monkeypatch.setenv(GRACEFUL_RESIZE_ENV, "1")
    assert build_graph(settings(server_type="cx33"), cloud=on("cx23", 40, status="running")).one(SERVER)
    # Unchanged type: nothing to refuse, running or not, with or without the tooling.
    monkeypatch.delenv(GRACEFUL_RESIZE_ENV)
    assert build_graph(settings(server_type="cx23"), cloud=on("cx23", 40, status="running")).one(SERVER)


# --- decommissioning -----------------------------------------------------------------------------


def test_snapshot_expiry_is_the_retention_after_the_day_it_is_taken() -> None:
    assert snapshot_expiry(date(2026, 12, 20), 30) == "2027-01-19"
    assert snapshot_expiry(date(2026, 2, 27), 2) == "2026-03-01"


def test_decommission_snapshots_the_server_and_lifts_every_protection() -> None:
    before = datetime.now(UTC).date()
    decommissioned = build_graph(settings(decommission=True))
    after = datetime.now(UTC).date()
    server = decommissioned.one(SERVER)
    assert not server.protect
    assert server.inputs["deleteProtection"] is False
    assert server.inputs["rebuildProtection"] is False
    assert not decommissioned.one(FIREWALL).protect
    snapshot = decommissioned.one(SNAPSHOT)
    assert snapshot.retain_on_delete, "the snapshot must survive `pulumi destroy`"
    assert not snapshot.protect, "destroy removes it from the stack (Hetzner keeps it)"
    assert snapshot.ignore_changes == ["labels"], "its expiry is fixed when it is taken"
    assert snapshot.inputs["serverId"] == int(decommissioned.outputs["server_id"])
    assert server.urn in snapshot.dependencies
    labels = snapshot.inputs["labels"]
    assert {key: labels[key] for key in LABELS} == LABELS
    assert labels["expires-on"] in {snapshot_expiry(day, 30) for day in (before, after)}


def test_snapshot_retention_comes_from_the_platform_and_the_program_exports_the_snapshot() -> None:
    graph = Graph()
    run_program({**STACK_CONFIG, "clawhosters:decommission": "true", "platform:snapshot_retention_days": "90"}, graph)
    expires = graph.one(SNAPSHOT).inputs["labels"]["expires-on"]
    today = datetime.now(UTC).date()
    assert date.fromisoformat(expires) - today in {timedelta(days=90), timedelta(days=89)}
    assert graph.outputs["snapshot_id"].isdigit()
    assert "snapshot_id" not in _outputs(STACK_CONFIG)


def _outputs(config: dict[str, str]) -> dict[str, Any]:
    graph = Graph()
    run_program(config, graph)
    return graph.outputs


# --- refusals ------------------------------------------------------------------------------------


def test_the_program_refuses_a_stack_that_is_not_the_customers() -> None:
    graph = Graph()
    with pytest.raises(ConfigError) as caught:
        run_program(STACK_CONFIG, graph, stack="customer-globex")
    message = str(caught.value)
    assert "clawhosters:customer_id" in message
    assert "'customer-acme'" in message and "'customer-globex'" in message
    assert graph.registrations == []


def test_a_location_change_is_refused_before_anything_is_registered() -> None:
    graph = Graph()
    with pytest.raises(ConfigError) as caught:
        run_program({**STACK_CONFIG, "clawhosters:location": "nbg1"}, graph, cloud=cloud(DEDICATED_ID))
    message = str(caught.value)
    assert "clawhosters:location: server claw-acme is in fsn1; changing it to nbg1 would replace" in message
    assert "Moving a customer" in message
    assert graph.registrations == []
    # The same location is no change at all.
    assert build_graph(settings(), cloud=cloud(DEDICATED_ID)).one(SERVER).inputs["location"] == "fsn1"


def test_servers_of_other_customers_do_not_count() -> None:
    other = CloudServer(
        name="claw-globex", location="hel1", firewall_ids=(SHARED_ID,), labels={**LABELS, "customer": "globex"}
    )
    assert build_graph(settings(), cloud=Cloud(servers=(other,))).one(SERVER).inputs["location"] == "fsn1"


@pytest.mark.parametrize(
    "attached,target",
    [
        ((DEDICATED_ID,), "shared"),  # dedicated -> shared
        ((SHARED_ID,), "dedicated"),  # shared -> dedicated
    ],
)
def test_a_direct_firewall_mode_switch_is_refused(attached: tuple[int, ...], target: str) -> None:
    refused(
        settings(mode(target)),
        cloud(*attached, dedicated=target == "shared"),
        "platform:firewall_mode: switching server claw-acme (firewalls ",
        f"straight to '{target}' would leave it without a cloud firewall",
        "firewall_mode 'both' first",
    )


def test_the_two_step_switch_keeps_a_firewall_attached_at_every_step() -> None:
    # dedicated -> both: the dedicated firewall stays, the shared one joins; the dedicated one is
    # no longer protected, so the next step can remove it.
    both = build_graph(settings(mode("both")), cloud=cloud(DEDICATED_ID))
    dedicated = both.one(FIREWALL)
    assert not dedicated.protect
    assert both.one(SERVER).inputs["firewallIds"] == [int(both.outputs["firewall_id"].split(",")[0]), SHARED_ID]
    assert dedicated.urn in both.one(SERVER).dependencies
    # both -> shared: the shared firewall was attached all along.
    shared = build_graph(settings(mode("shared")), cloud=cloud(DEDICATED_ID, SHARED_ID))
    assert shared.of_type(FIREWALL) == []
    assert shared.one(SERVER).inputs["firewallIds"] == [SHARED_ID]
    # And back: shared -> both -> dedicated.
    build_graph(settings(mode("both")), cloud=cloud(SHARED_ID, dedicated=False))
    back = build_graph(settings(mode("dedicated")), cloud=cloud(DEDICATED_ID, SHARED_ID))
    assert back.one(FIREWALL).protect


def test_a_shared_firewall_that_differs_from_the_policy_is_refused_naming_the_difference() -> None:
    good = baseline_firewall(SHARED_ID, POLICY)
    mysql = {"direction": "in", "protocol": "tcp", "port": "3306", "source_ips": ["0.0.0.0/0"]}
    tampered = (*(rule for rule in good.rules if rule["protocol"] != "esp"), mysql)
    existing = Cloud(firewalls=(CloudFirewall(id=SHARED_ID, name="platform-baseline", rules=tampered),))
    message = refused(
        settings(mode("shared")),
        existing,
        f"platform:shared_firewall_id: firewall {SHARED_ID} (platform-baseline) does not match the baseline",
        "missing: out esp to 0.0.0.0/0, ::/0",
        "unexpected: in tcp 3306 from 0.0.0.0/0",
    )
    assert "missing: in tcp 22" not in message
    # The same rules in another order, with networks spelt differently, are no difference.
    respelt = tuple(
        {**rule, "source_ips": ["::0/0", "0.0.0.0/0"]} if "source_ips" in rule else rule for rule in good.rules
    )
    same = Cloud(firewalls=(CloudFirewall(id=SHARED_ID, name="platform-baseline", rules=tuple(reversed(respelt))),))
    assert build_graph(settings(mode("shared")), cloud=same).one(SERVER).inputs["firewallIds"] == [SHARED_ID]


def test_an_unknown_shared_firewall_fails_the_run() -> None:
    with pytest.raises(ValueError, match=re.escape(f"firewall not found: {SHARED_ID}")):
        build_graph(settings(mode("shared")), cloud=Cloud())


SHARED_CONFIG = {"platform:shared_firewall_id": str(SHARED_ID)}


@pytest.mark.parametrize(
    "config,existing",
    [
        ({**STACK_CONFIG, "clawhosters:decommission": "true"}, None),
        ({**STACK_CONFIG, **SHARED_CONFIG, "platform:firewall_mode": "both"}, cloud(DEDICATED_ID)),
        ({**STACK_CONFIG, **SHARED_CONFIG, "platform:firewall_mode": "shared"}, cloud(DEDICATED_ID, SHARED_ID)),
    ],
    ids=["decommission", "both", "shared"],
)
def test_the_policy_pack_passes_on_these_graphs(
    packs: Callable[[str, dict[str, str]], Pack], config: dict[str, str], existing: Cloud | None
) -> None:
    assert packs("customer-acme", config).analyze(graph_of(config, existing)) == []

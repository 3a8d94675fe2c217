"""Drift detection on each VPS: the check (components/drift_check.py), its systemd units and what it
expects, rendered into the baseline bundle from the same policy as the rest of it.

The timer runs the check `first_check_seconds` after boot (and after install), then every
`check_interval_seconds` (config.DriftPolicy). The check writes STATUS_FILE, which `python -m drift`
reads over SSH for the fleet report.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict

from components.bundle import RenderedFile
from components.gateway import CONTAINER_NAME
from components.gateway import UNIT_NAME as GATEWAY_UNIT
from config.policy import BaselinePolicy

CHECK_PATH = "drift/check.py"
EXPECTED_PATH = "drift/expected.json"
STATUS_FILE = "/var/lib/clawhosters/baseline-status.json"
DRIFT_SERVICE = "clawhosters-drift.service"
DRIFT_TIMER = "clawhosters-drift.timer"
UNIT_FILES = (f"etc/systemd/system/{DRIFT_SERVICE}", f"etc/systemd/system/{DRIFT_TIMER}")
CHECK_SOURCE = Path(__file__).with_name("drift_check.py")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FirewallTargets(_Frozen):
    """What the baseline owns in the filter table."""

    # Rewritten by the rule files: compared rule by rule.
    owned_chains: tuple[str, ...]
    # fail2ban fills it: only its existence is compared.
    bans_chain: str
    # Built-in chains that hold nothing but our hooks.
    exclusive_chains: tuple[str, ...]
    # chain -> target whose jump must be the chain's first rule, once.
    first_hooks: dict[str, str]
    # chain -> target whose jump must be in the chain, once (Docker orders the rest).
    hooks: dict[str, str]


class DriftTargets(_Frozen):
    """The host baseline's side of the contract with the check (names live in host_baseline)."""

    bundle_dir: str
    firewall_unit: str
    firewall: FirewallTargets
    ban_action: str
    sshd_dropin: str
    # Shipped files the check puts back when their part of the baseline drifted, per probe.
    restore: dict[str, tuple[str, ...]]


def _sshd_settings(dropin: str) -> dict[str, str]:
    """The drop-in's settings as `sshd -T` prints them (lower-case keywords)."""
    settings: dict[str, str] = {}
    for line in dropin.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, *values = line.split()
            settings[keyword.lower()] = " ".join(values)
    return settings


def _expected(policy: BaselinePolicy, targets: DriftTargets, files: tuple[RenderedFile, ...]) -> str:
    dropin = next(item.content for item in files if item.path == PurePosixPath(targets.sshd_dropin))
    jail = policy.fail2ban
    own = [CHECK_PATH, EXPECTED_PATH, *UNIT_FILES]
    document = {
        # Every file of the bundle, this one included: the check recomputes the bundle's digest.
        "bundle_files": sorted({*(str(item.path) for item in files), *own}, key=PurePosixPath),
        "status_file": STATUS_FILE,
        "confirm_seconds": policy.drift.confirm_seconds,
        "firewall": targets.firewall.model_dump(mode="json"),
        "fail2ban": {
            "jail": jail.jail,
            "settings": {
                "maxretry": str(jail.maxretry),
                "findtime": str(jail.findtime_seconds),
                "bantime": str(jail.bantime_seconds),
            },
            "actions": [targets.ban_action],
        },
        "sshd": _sshd_settings(dropin),
        "containers": {"gateway_container": CONTAINER_NAME, "gateway_port": policy.inbound.gateway_port},
        "units": {
            "fail2ban": "fail2ban.service",
            "ssh": "ssh.service",
            "docker": "docker.service",
            "gateway": GATEWAY_UNIT,
        },
        "restore": {probe: {path: f"/{path}" for path in paths} for probe, paths in targets.restore.items()},
    }
    return json.dumps(document, indent=2) + "\n"


def _service(targets: DriftTargets) -> str:
    return f"""[Unit]
Description=clawhosters baseline drift check (logs BASELINE_DRIFT, re-asserts the baseline)
After={targets.firewall_unit} docker.service fail2ban.service ssh.service
ConditionPathExists={targets.bundle_dir}/{CHECK_PATH}
# The timer decides how often it runs; systemd's start limit must never silence it.
StartLimitIntervalSec=0

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 {targets.bundle_dir}/{CHECK_PATH}
SyslogIdentifier=clawhosters-drift
"""


def _timer(policy: BaselinePolicy) -> str:
    drift = policy.drift
    # OnActiveSec counts from the timer's start: at boot, and when apply.sh (re)starts it.
    return f"""[Unit]
Description=clawhosters baseline drift check, every {drift.check_interval_seconds} s

[Timer]
OnActiveSec={drift.first_check_seconds}s
OnUnitActiveSec={drift.check_interval_seconds}s
AccuracySec=1s

[Install]
WantedBy=timers.target
"""


def render_drift(
    policy: BaselinePolicy, targets: DriftTargets, files: tuple[RenderedFile, ...]
) -> tuple[RenderedFile, ...]:
    """The drift check's files, to add to the bundle whose other `files` they describe."""
    return (
        RenderedFile(path=CHECK_PATH, content=CHECK_SOURCE.read_text(), mode=0o755),
        RenderedFile(path=EXPECTED_PATH, content=_expected(policy, targets, files)),
        RenderedFile(path=UNIT_FILES[0], content=_service(targets)),
        RenderedFile(path=UNIT_FILES[1], content=_timer(policy)),
    )

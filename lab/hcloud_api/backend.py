"""Where the emulator's servers run: the hook the lab plugs booted machines into.

Every method is called from a worker thread while the action that asked for it is `running`, and
the action succeeds when the method returns (fails with its message when it raises
`MachineError`); `delete_image` also runs after an image's deletion, which has no action. Methods
are called again with the same arguments when the emulator restarts with that action still running,
so each must be safe to repeat (`apply_firewall` also runs for every server when the emulator starts
with a saved state).
"""

from __future__ import annotations

import threading
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict


class MachineError(Exception):
    """The machine could not do what the action asked; the message becomes the action's error."""


class MachineSpec(BaseModel):
    """Everything about one server a machine needs: its size, its disk's origin, its addresses."""

    model_config = ConfigDict(frozen=True)

    server_id: int
    project: str
    name: str
    server_type: str
    architecture: str
    cores: int
    memory_gb: float
    disk_gb: int
    location: str
    image_id: int | None
    user_data: str | None
    ssh_public_keys: tuple[str, ...]
    ipv4: str | None
    ipv6_network: str | None


class FirewallRule(BaseModel):
    """One rule as Hetzner enforces it: traffic it allows (`in`: from `source_ips` to the server's
    `port`; `out`: from the server to `destination_ips` and `port`); `port` only for tcp and udp."""

    model_config = ConfigDict(frozen=True)

    direction: Literal["in", "out"]
    protocol: Literal["tcp", "udp", "icmp", "esp", "gre"]
    port: str | None = None
    source_ips: tuple[str, ...] = ()
    destination_ips: tuple[str, ...] = ()


class ServerFirewall(BaseModel):
    """What filters one server's traffic: the firewalls that apply to it (directly or by a label
    selector) and the union of their rules. No firewall: unfiltered."""

    model_config = ConfigDict(frozen=True)

    firewall_ids: tuple[int, ...] = ()
    rules: tuple[FirewallRule, ...] = ()


class MachineBackend(Protocol):
    def create(self, machine: MachineSpec) -> None:
        """Provision the disk from `machine.image_id` with its cloud-init seed; leave it off."""

    def power_on(self, machine: MachineSpec) -> None:
        """Boot the machine (no-op when it runs)."""

    def power_off(self, machine: MachineSpec) -> None:
        """Cut the power (no-op when it is off)."""

    def shutdown(self, machine: MachineSpec) -> None:
        """Ask the OS to shut down; return once it is off."""

    def reboot(self, machine: MachineSpec) -> None:
        """Ask the OS to reboot; return once it runs again."""

    def reset(self, machine: MachineSpec) -> None:
        """Cut the power and boot again."""

    def resize(self, machine: MachineSpec) -> None:
        """Give the (off) machine the cores, memory and disk size `machine` now has."""

    def rebuild(self, machine: MachineSpec) -> None:
        """Overwrite the (off) machine's disk from `machine.image_id`."""

    def snapshot(self, machine: MachineSpec, image_id: int) -> float:
        """Copy the disk into image `image_id` (a snapshot or a backup), as it is at one moment also
        while the machine runs; return its size in GB."""

    def delete_image(self, image_id: int) -> None:
        """Remove the disk of image `image_id` (no-op when it is gone)."""

    def delete(self, machine: MachineSpec) -> None:
        """Remove the machine and its disk (no-op when it is gone)."""

    def apply_firewall(self, server_id: int, firewall: ServerFirewall) -> None:
        """Filter the server's traffic by `firewall` from now on, in place of what filtered it before."""


class RecordingBackend:
    """No machines: remembers which hook was called for which server, and whether it would run."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.running: set[int] = set()
        # Every apply_firewall call in order, and what each server is filtered by now.
        self.firewall_calls: list[tuple[int, ServerFirewall]] = []
        self.firewalls: dict[int, ServerFirewall] = {}
        self._lock = threading.Lock()

    def _record(self, hook: str, machine: MachineSpec, *, running: bool | None = None) -> None:
        with self._lock:
            self.calls.append((hook, machine.server_id))
            if running is True:
                self.running.add(machine.server_id)
            elif running is False:
                self.running.discard(machine.server_id)

    def apply_firewall(self, server_id: int, firewall: ServerFirewall) -> None:
        with self._lock:
            self.calls.append(("apply_firewall", server_id))
            self.firewall_calls.append((server_id, firewall))
            self.firewalls[server_id] = firewall

    def create(self, machine: MachineSpec) -> None:
        self._record("create", machine, running=False)

    def power_on(self, machine: MachineSpec) -> None:
        self._record("power_on", machine, running=True)

    def power_off(self, machine: MachineSpec) -> None:
        self._record("power_off", machine, running=False)

    def shutdown(self, machine: MachineSpec) -> None:
        self._record("shutdown", machine, running=False)

    def reboot(self, machine: MachineSpec) -> None:
        self._record("reboot", machine, running=True)

    def reset(self, machine: MachineSpec) -> None:
        self._record("reset", machine, running=True)

    def resize(self, machine: MachineSpec) -> None:
        self._record("resize", machine)

    def rebuild(self, machine: MachineSpec) -> None:
        self._record("rebuild", machine)

    def snapshot(self, machine: MachineSpec, image_id: int) -> float:
        self._record("snapshot", machine)
        return round(machine.disk_gb * 0.04, 2)

    def delete(self, machine: MachineSpec) -> None:
        self._record("delete", machine, running=False)

    def delete_image(self, image_id: int) -> None:
        with self._lock:
            self.calls.append(("delete_image", image_id))

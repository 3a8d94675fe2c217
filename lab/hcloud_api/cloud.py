"""The cloud itself: what each request does to a project's state, and how actions finish.

Everything here runs on the server's event loop, so requests and finishing actions never
interleave in the middle of a change; only the machine hooks run in worker threads.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread

from config.hetzner import HETZNER, ServerType
from lab.hcloud_api import catalog, schemas, store
from lab.hcloud_api.backend import FirewallRule, MachineBackend, MachineError, MachineSpec, ServerFirewall
from lab.hcloud_api.catalog import Stock
from lab.hcloud_api.config import EmulatorConfig
from lab.hcloud_api.errors import ApiError, invalid_input, not_found
from lab.hcloud_api.labels import parse_selector, validate_labels
from lab.hcloud_api.records import (
    ActionFailure,
    ActionRecord,
    AppliedTo,
    Cloud,
    FirewallRecord,
    ImageRecord,
    ProjectState,
    ResourceRef,
    Rule,
    ServerRecord,
    ServerStatus,
    SshKeyRecord,
    Step,
)
from lab.hcloud_api.views import (
    Json,
    action_view,
    applies_to,
    covering,
    firewall_view,
    image_view,
    own_image_view,
    server_view,
    ssh_key_view,
    system_image_view,
)
from lab.hcloud_api.zones import Zones

log = logging.getLogger("lab.hcloud_api")

# RFC 1123 host names, as Hetzner requires for servers.
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)
_PORT = re.compile(r"(\d{1,5})(?:-(\d{1,5}))?|any")
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
USER_DATA_LIMIT = 32 * 1024
# What Hetzner answers when it has no room for a server of that type there (users' reports, 2025).
UNPLACEABLE = "we are unable to provision servers for this location, try with a different location or try later"
RULES_LIMIT = 50
FIREWALLS_PER_SERVER = 5
# Actions during which a server takes no other action (Hetzner answers `locked`).
_SERVER_COMMANDS = frozenset(
    {
        "create_server",
        "start_server",
        "stop_server",
        "shutdown_server",
        "reboot_server",
        "reset_server",
        "change_server_type",
        "rebuild_server",
        "create_image",
        "enable_backup",
        "disable_backup",
    }
)
# Hetzner keeps seven backups a server; a new one beyond them replaces the oldest.
BACKUP_SLOTS = 7
# The daily windows (UTC hours) Hetzner picks one of for a server's backups.
BACKUP_WINDOWS = ("22-02", "02-06", "06-10", "10-14", "14-18", "18-22")


def now() -> datetime:
    return datetime.now(UTC)


def fingerprint(public_key: str) -> str:
    """Hetzner's fingerprint: MD5 of the key blob, colon-separated hex."""
    parts = public_key.split()
    if len(parts) < 2 or parts[0] not in _KEY_TYPES:
        raise invalid_input("public_key", "invalid public key")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error as error:
        raise invalid_input("public_key", "invalid public key") from error
    if blob[4 : 4 + int.from_bytes(blob[:4], "big")] != parts[0].encode():
        raise invalid_input("public_key", "invalid public key")
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class Emulator:
    def __init__(self, config: EmulatorConfig, backend: MachineBackend) -> None:
        self.config = config
        self.backend = backend
        self.cloud: Cloud = store.load(config.state_dir)
        # Hetzner's, not a project's: what every project finds sold out.
        self.stock = Stock((entry.server_type, entry.location) for entry in config.sold_out)
        self._finished: dict[int, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Firewall hooks one at a time: the rules computed last are the rules applied last.
        self._firewall_lock = asyncio.Lock()
        self.zones = Zones(self)

    # --- lifecycle -------------------------------------------------------------------------

    async def resume(self) -> None:
        """Put every server's firewall in force again and publish every zone, then finish what was
        running when the emulator last stopped, in the order it was started."""
        self.zones.publish_all()
        for name, project in self.cloud.projects.items():
            await self._enforce(name, list(project.servers))
        running = [
            (name, a) for name, p in self.cloud.projects.items() for a in p.actions.values() if a.status == "running"
        ]
        for _, action in running:
            self._finished[action.id] = asyncio.Event()
        for name, action in running:
            self._schedule(name, action)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def project(self, name: str) -> ProjectState:
        return self.cloud.projects.setdefault(name, ProjectState())

    def save(self) -> None:
        store.save(self.config.state_dir, self.cloud)

    # --- actions ---------------------------------------------------------------------------

    def _action(
        self, project: str, command: str, resources: list[ResourceRef], step: Step | None, *, done: bool = False
    ) -> ActionRecord:
        started = now()
        action = ActionRecord(
            id=self.cloud.new_id(),
            command=command,
            status="success" if done else "running",
            progress=100 if done else 0,
            started=started,
            finished=started if done else None,
            resources=resources,
            step=None if done else (step or Step()),
        )
        self.project(project).actions[action.id] = action
        if not done:
            self._schedule(project, action)
        return action

    def action_on(self, project: str, command: str, resources: list[ResourceRef]) -> ActionRecord:
        """A running action whose change is already made (a zone's): it succeeds in `action_seconds`."""
        return self._action(project, command, resources, None)

    def _schedule(self, project: str, action: ActionRecord) -> None:
        self._finished.setdefault(action.id, asyncio.Event())
        task = asyncio.get_running_loop().create_task(self._finish(project, action.id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, project_name: str, action_id: int) -> None:
        project = self.project(project_name)
        action = project.actions[action_id]
        step = action.step or Step()
        if step.after is not None and step.after in self._finished:
            await self._finished[step.after].wait()
        await asyncio.sleep(self.config.action_seconds)
        finish = _FINISHERS.get(action.command)
        failure: ActionFailure | None = None
        try:
            before = project.actions.get(step.after) if step.after is not None else None
            if before is not None and before.status == "error":
                raise MachineError(f"action {before.id} ({before.command}) failed")
            if finish is not None:
                await finish(self, project_name, step)
        except Exception as error:
            if not isinstance(error, MachineError):
                log.exception("action %s (%s) failed", action.id, action.command)
            failure = ActionFailure(code="action_failed", message=str(error) or "action failed")
            _FAILURE_STATUS.get(action.command, lambda _p, _s: None)(project, step)
        action.status = "error" if failure else "success"
        action.error = failure
        action.progress = 100
        action.finished = now()
        action.step = None
        self.save()
        self._finished[action_id].set()

    def _background(self, call: Callable[..., Any], *arguments: Any) -> None:
        """A hook no action waits for."""
        task = asyncio.get_running_loop().create_task(self._hook(call, *arguments))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _all_actions(self) -> Iterator[ActionRecord]:
        for project in self.cloud.projects.values():
            yield from project.actions.values()

    async def _hook(self, call: Callable[..., Any], *arguments: Any) -> Any:
        # A stopping emulator does not wait for a machine; the action runs again after a restart.
        return await anyio.to_thread.run_sync(call, *arguments, abandon_on_cancel=True)

    async def _enforce(self, project_name: str, server_ids: Iterable[int]) -> None:
        """Hand each server what filters it now (a server that is gone: nothing) to the backend."""
        project = self.project(project_name)
        for server_id in server_ids:
            async with self._firewall_lock:
                server = project.servers.get(server_id)
                firewall = server_firewall(project, server) if server is not None else ServerFirewall()
                await self._hook(self.backend.apply_firewall, server_id, firewall)

    def _locked(self, project: ProjectState, server_id: int) -> None:
        for action in project.actions.values():
            if (
                action.status == "running"
                and action.command in _SERVER_COMMANDS
                and any(r.type == "server" and r.id == server_id for r in action.resources)
            ):
                raise ApiError("locked", f"server {server_id} is locked by action {action.id} ({action.command})")

    def machine(self, project_name: str, server: ServerRecord) -> MachineSpec:
        project = self.project(project_name)
        server_type = catalog.server_type_by_id(server.server_type_id)
        return MachineSpec(
            server_id=server.id,
            project=project_name,
            name=server.name,
            server_type=server_type.name,
            architecture=server_type.architecture,
            cores=server_type.cores,
            memory_gb=server_type.memory,
            disk_gb=server.primary_disk_size,
            location=server.location,
            image_id=server.image_id,
            user_data=server.user_data,
            ssh_public_keys=tuple(project.ssh_keys[k].public_key for k in server.ssh_key_ids if k in project.ssh_keys),
            ipv4=server.ipv4,
            ipv6_network=server.ipv6_network,
        )

    def actions(self, project: str, ids: list[int] | None, resource: str | None, resource_id: int | None) -> list[Json]:
        found = []
        for action in self.project(project).actions.values():
            if ids is not None and action.id not in ids:
                continue
            if resource is not None and not any(
                r.type == resource and (resource_id is None or r.id == resource_id) for r in action.resources
            ):
                continue
            found.append(action_view(action))
        return found

    def action(self, project: str, action_id: int, resource: str | None, resource_id: int | None) -> Json:
        found = self.actions(project, [action_id], resource, resource_id)
        if not found:
            raise not_found("action")
        return found[0]

    # --- addresses -------------------------------------------------------------------------

    def _machines_going(self) -> Iterator[MachineSpec]:
        for project in self.cloud.projects.values():
            for action in project.actions.values():
                if action.status == "running" and action.step and action.step.machine:
                    yield action.step.machine

    def _allocate(self) -> tuple[str, str]:
        servers = [s for p in self.cloud.projects.values() for s in p.servers.values()]
        used4 = {s.ipv4 for s in servers} | {m.ipv4 for m in self._machines_going()}
        used6 = {s.ipv6_network for s in servers} | {m.ipv6_network for m in self._machines_going()}
        ipv4 = next((str(ip) for ip in self.config.pools.ipv4.hosts() if str(ip) not in used4), None)
        ipv6 = next((str(net) for net in self.config.pools.ipv6.subnets(new_prefix=64) if str(net) not in used6), None)
        if ipv4 is None or ipv6 is None:
            raise ApiError("resource_unavailable", "no free primary IP left in the address pool")
        return ipv4, ipv6

    # --- servers ---------------------------------------------------------------------------

    def server(self, project: str, server_id: int) -> ServerRecord:
        found = self.project(project).servers.get(server_id)
        if found is None:
            raise not_found("server")
        return found

    def server_json(self, project: str, server: ServerRecord) -> Json:
        return server_view(self.project(project), server, now(), self.stock)

    def list_servers(self, project: str, name: str | None, selector: str | None, statuses: list[str]) -> list[Json]:
        matches = parse_selector(selector) if selector else None
        return [
            self.server_json(project, s)
            for s in self.project(project).servers.values()
            if (name is None or s.name == name)
            and (matches is None or matches(s.labels))
            and (not statuses or s.status in statuses)
        ]

    def _unique_server_name(self, project: ProjectState, name: str, server_id: int | None = None) -> str:
        if _HOSTNAME.fullmatch(name) is None:
            raise invalid_input("name", "server name must be a valid hostname (RFC 1123)")
        if any(s.name == name and s.id != server_id for s in project.servers.values()):
            raise ApiError("uniqueness_error", "server name is already used", {"fields": [{"name": "name"}]})
        return name

    def _image_for(
        self, project: ProjectState, ref: str | int, server_type: ServerType
    ) -> tuple[int, int, str, str | None]:
        """(image id, disk size, os flavor, os version) of `ref` for a server of `server_type`."""
        text = str(ref)
        for system in catalog.SYSTEM_IMAGES:
            if text == str(system.id) or (text == system.name and system.architecture == server_type.architecture):
                if system.architecture != server_type.architecture:
                    raise invalid_input("image", "image architecture does not match the server type")
                return system.id, int(system.disk_size), system.os_flavor, system.os_version
        if text.isdigit() and (own := project.images.get(int(text))) is not None:
            if own.status != "available":
                raise invalid_input("image", "image is not available yet")
            if own.architecture != server_type.architecture:
                raise invalid_input("image", "image architecture does not match the server type")
            return own.id, own.disk_size, own.os_flavor, own.os_version
        raise invalid_input("image", f"image {text!r} not found")

    def create_server(self, project_name: str, body: schemas.CreateServer) -> Json:
        project = self.project(project_name)
        name = self._unique_server_name(project, body.name)
        if body.datacenter is not None:
            raise invalid_input("datacenter", "datacenter was removed from servers (2026-07-01); use location")
        if body.volumes or body.networks or body.placement_group is not None:
            raise ApiError("unsupported_error", "volumes, networks and placement groups are not emulated")
        server_type = HETZNER.server_type(body.server_type)
        if server_type is None:
            raise invalid_input("server_type", f"server type {body.server_type!r} not found")
        moment = now()
        location = self._location_for(server_type, body.location, moment)
        image_id, image_disk, _, _ = self._image_for(project, body.image, server_type)
        if image_disk > server_type.disk:
            raise invalid_input("image", "image disk is bigger than the server type's disk")
        ssh_key_ids = [self._ssh_key_ref(project, ref) for ref in body.ssh_keys or []]
        if body.user_data is not None and len(body.user_data.encode()) > USER_DATA_LIMIT:
            raise invalid_input("user_data", "user_data is limited to 32 KiB")
        labels = validate_labels(body.labels or {})
        firewall_ids = [ref.firewall for ref in body.firewalls or []]
        for firewall_id in firewall_ids:
            if firewall_id not in project.firewalls:
                raise invalid_input("firewalls", f"firewall {firewall_id} not found")
        if len(set(firewall_ids)) > FIREWALLS_PER_SERVER:
            raise ApiError("resource_limit_exceeded", f"a server takes at most {FIREWALLS_PER_SERVER} firewalls")
        public_net = body.public_net or schemas.PublicNet()
        if public_net.ipv4 is not None or public_net.ipv6 is not None:
            raise ApiError("unsupported_error", "primary IPs are not emulated; leave ipv4/ipv6 unset")
        ipv4, ipv6 = self._allocate()
        server = ServerRecord(
            id=self.cloud.new_id(),
            name=name,
            status="initializing",
            created=moment,
            server_type_id=server_type.id,
            location=location,
            image_id=image_id,
            primary_disk_size=server_type.disk,
            labels=labels,
            ipv4=ipv4 if public_net.enable_ipv4 else None,
            ipv4_id=self.cloud.new_id() if public_net.enable_ipv4 else None,
            ipv6_network=ipv6 if public_net.enable_ipv6 else None,
            ipv6_id=self.cloud.new_id() if public_net.enable_ipv6 else None,
            ssh_key_ids=ssh_key_ids,
            user_data=body.user_data,
        )
        project.servers[server.id] = server
        for firewall_id in dict.fromkeys(firewall_ids):
            project.firewalls[firewall_id].applied_to.append(AppliedTo(type="server", server_id=server.id))
        ref = [ResourceRef(id=server.id, type="server")]
        create = self._action(project_name, "create_server", ref, Step(server_id=server.id))
        next_actions = []
        if body.start_after_create is not False:
            start = self._action(project_name, "start_server", ref, Step(server_id=server.id, after=create.id))
            next_actions.append(action_view(start))
        self.save()
        return {
            "server": self.server_json(project_name, server),
            "action": action_view(create),
            "next_actions": next_actions,
            "root_password": None if ssh_key_ids else secrets.token_urlsafe(15),
        }

    def _location_for(self, server_type: ServerType, ref: str | int | None, moment: datetime) -> str:
        if ref is None:
            orderable = [name for name in server_type.locations if server_type.orderable_in(name, moment)]
            if not orderable:
                raise ApiError("invalid_server_type", f"server type {server_type.name} is deprecated")
            choice = next((name for name in orderable if self.stock.available(server_type, name, moment)), None)
            if choice is None:
                raise ApiError("resource_unavailable", UNPLACEABLE)
            return choice
        location = HETZNER.location(ref)
        if location is None:
            raise invalid_input("location", f"location '{ref}' not found")
        if location.name not in server_type.locations:
            raise invalid_input("location", "unsupported location for server type")
        if not server_type.orderable_in(location.name, moment):
            raise ApiError(
                "invalid_server_type",
                f"server type {server_type.name} is deprecated in {location.name} and unavailable",
            )
        if not self.stock.available(server_type, location.name, moment):
            raise ApiError("resource_unavailable", UNPLACEABLE)
        return location.name

    def update_server(self, project_name: str, server_id: int, body: schemas.UpdateNameLabels) -> Json:
        project = self.project(project_name)
        server = self.server(project_name, server_id)
        if body.name is not None:
            server.name = self._unique_server_name(project, body.name, server.id)
        if body.labels is not None:
            before = {fw.id: fw for fw in covering(project, server)}
            server.labels = validate_labels(body.labels)
            after = {fw.id: fw for fw in covering(project, server)}
            # Label selectors follow the labels: a firewall action for each firewall gained or lost.
            for firewall_id in after.keys() - before.keys():
                self._firewall_action(project_name, "apply_firewall", after[firewall_id], server.id)
            for firewall_id in before.keys() - after.keys():
                self._firewall_action(project_name, "remove_firewall", before[firewall_id], server.id)
        self.save()
        return {"server": self.server_json(project_name, server)}

    def delete_server(self, project_name: str, server_id: int) -> Json:
        project = self.project(project_name)
        server = self.server(project_name, server_id)
        if server.delete_protection:
            raise ApiError("protected", "server is delete protected")
        self._locked(project, server.id)
        machine = self.machine(project_name, server)
        # Gone from the project at once, as at Hetzner, with the backups bound to it (its snapshots
        # stay); its machine and their disks go while the action runs.
        del project.servers[server.id]
        for firewall in project.firewalls.values():
            firewall.applied_to = [
                e for e in firewall.applied_to if not (e.type == "server" and e.server_id == server.id)
            ]
        backups = self._drop_backups(project, server.id)
        action = self._action(
            project_name,
            "delete_server",
            [ResourceRef(id=server.id, type="server")],
            Step(machine=machine, dropped_images=backups),
        )
        self.save()
        return {"action": action_view(action)}

    def server_action(self, project_name: str, server_id: int, command: str) -> Json:
        """poweron, poweroff, shutdown, reboot, reset: one hook each, done when the machine is."""
        project = self.project(project_name)
        server = self.server(project_name, server_id)
        self._locked(project, server.id)
        action = self._action(
            project_name, command, [ResourceRef(id=server.id, type="server")], Step(server_id=server.id)
        )
        server.status = _POWER_STATUS[command][0]
        self.save()
        return {"action": action_view(action)}

    def change_protection(self, project_name: str, server_id: int, body: schemas.ChangeProtection) -> Json:
        server = self.server(project_name, server_id)
        delete = server.delete_protection if body.delete is None else body.delete
        rebuild = server.rebuild_protection if body.rebuild is None else body.rebuild
        if delete != rebuild:
            raise invalid_input("delete", "delete and rebuild protection must have the same value")
        server.delete_protection, server.rebuild_protection = delete, rebuild
        action = self._action(
            project_name, "change_protection", [ResourceRef(id=server.id, type="server")], None, done=True
        )
        self.save()
        return {"action": action_view(action)}

    def change_type(self, project_name: str, server_id: int, body: schemas.ChangeType) -> Json:
        project = self.project(project_name)
        server = self.server(project_name, server_id)
        self._locked(project, server.id)
        if server.status != "off":
            raise ApiError("server_not_stopped", "server must be stopped before changing type")
        current = catalog.server_type_by_id(server.server_type_id)
        target = HETZNER.server_type(body.server_type)
        if target is None:
            raise invalid_input("server_type", f"server type {body.server_type!r} not found")
        problem = None
        if target.id == current.id:
            problem = "server already has this server type"
        elif target.architecture != current.architecture:
            problem = f"cannot change from {current.architecture} to {target.architecture}"
        elif target.storage_type != current.storage_type:
            problem = "cannot change the storage type"
        elif target.disk < server.primary_disk_size:
            problem = (
                f"disk of {target.name} ({target.disk} GB) is smaller than the server's ({server.primary_disk_size} GB)"
            )
        elif server.location not in target.locations:
            problem = f"server type {target.name} is not available in {server.location}"
        elif not target.orderable_in(server.location, now()):
            problem = f"server type {target.name} is deprecated"
        if problem is not None:
            raise ApiError("invalid_server_type", problem)
        if not self.stock.available(target, server.location, now()):
            raise ApiError("resource_unavailable", UNPLACEABLE)
        disk = target.disk if body.upgrade_disk else server.primary_disk_size
        step = Step(server_id=server.id, server_type_id=target.id, disk_gb=disk)
        action = self._action(project_name, "change_server_type", [ResourceRef(id=server.id, type="server")], step)
        server.status = "migrating"
        self.save()
        return {"action": action_view(action)}

    def rebuild(self, project_name: str, server_id: int, body: schemas.Rebuild) -> Json:
        project = self.project(project_name)
        server = self.server(project_name, server_id)
        if server.rebuild_protection:
            raise ApiError("protected", "server is rebuild protected")
        self._locked(project, server.id)
        server_type = catalog.server_type_by_id(server.server_type_id)
        image_id, image_disk, _, _ = self._image_for(project, body.image, server_type)
        if image_disk > server.primary_disk_size:
            raise invalid_input("image", "image disk is bigger than the server's disk")
        if body.user_data is not None:
            server.user_data = body.user_data
        step = Step(server_id=server.id, image_id=image_id)
        action = self._action(project_name, "rebuild_server", [ResourceRef(id=server.id, type="server")], step)
        server.status = "rebuilding"
        self.save()
        return {
            "action": action_view(action),
            "root_password": None if server.ssh_key_ids else secrets.token_urlsafe(15),
        }

    def enable_backup(self, project_name: str, server_id: int) -> Json:
        """Hetzner's automatic backups for the server, in a daily window Hetzner picks."""
        project = self.project(project_name)
        server = self.server(project_name, server_id)
        self._locked(project, server.id)
        server.backup_window = server.backup_window or BACKUP_WINDOWS[server.id % len(BACKUP_WINDOWS)]
        action = self._action(project_name, "enable_backup", [ResourceRef(id=server.id, type="server")], None)
        self.save()
        return {"action": action_view(action)}

    def disable_backup(self, project_name: str, server_id: int) -> Json:
        """No more backups, and the server's backups are deleted at once (their disks while the action runs)."""
        project = self.project(project_name)
        server = self.server(project_name, server_id)
        self._locked(project, server.id)
        server.backup_window = None
        dropped = self._drop_backups(project, server.id)
        action = self._action(
            project_name,
            "disable_backup",
            [ResourceRef(id=server.id, type="server")],
            Step(server_id=server.id, dropped_images=dropped),
        )
        self.save()
        return {"action": action_view(action)}

    def _drop_backups(self, project: ProjectState, server_id: int, keep: int = 0) -> list[int]:
        """Delete the server's backups but the newest `keep`; the ids of those deleted."""
        bound = sorted((i for i in project.images.values() if i.bound_to == server_id), key=lambda i: i.created)
        dropped = [image.id for image in bound[: max(0, len(bound) - keep)]]
        for image_id in dropped:
            del project.images[image_id]
        return dropped

    def backup_window(self) -> list[Json]:
        """The daily backups of every server with backups on, taken now (the lab's own route: the
        emulator takes them when told, never by the clock). A server busy with another action is
        left out, as its window passes."""
        taken = []
        for project_name, project in self.cloud.projects.items():
            for server in list(project.servers.values()):
                if server.backup_window is None:
                    continue
                try:
                    created = self.create_image(project_name, server.id, schemas.CreateImage(type="backup"))
                except ApiError as error:
                    taken.append({"server": server.id, "skipped": error.message})
                    continue
                taken.append({"server": server.id, "image": created["image"]["id"], "action": created["action"]["id"]})
        return taken

    def create_image(self, project_name: str, server_id: int, body: schemas.CreateImage) -> Json:
        project = self.project(project_name)
        server = self.server(project_name, server_id)
        backup = body.type == "backup"
        if backup and server.backup_window is None:
            raise invalid_input("type", "backups are not enabled for this server")
        self._locked(project, server.id)
        # A backup takes a slot; when all are taken, the oldest backup makes room.
        dropped = self._drop_backups(project, server.id, keep=BACKUP_SLOTS - 1) if backup else []
        moment = now()
        origin = self._origin(project, server)
        image = ImageRecord(
            id=self.cloud.new_id(),
            type="backup" if backup else "snapshot",
            bound_to=server.id if backup else None,
            status="creating",
            description=body.description or f"{server.name}-{moment:%Y%m%d%H%M%S}",
            created=moment,
            created_from_id=server.id,
            created_from_name=server.name,
            disk_size=server.primary_disk_size,
            os_flavor=origin[0],
            os_version=origin[1],
            architecture=catalog.server_type_by_id(server.server_type_id).architecture,
            labels=validate_labels(body.labels or {}),
        )
        project.images[image.id] = image
        step = Step(server_id=server.id, image_id=image.id, dropped_images=dropped)
        action = self._action(
            project_name,
            "create_image",
            [ResourceRef(id=server.id, type="server"), ResourceRef(id=image.id, type="image")],
            step,
        )
        self.save()
        return {"image": own_image_view(image), "action": action_view(action)}

    def _origin(self, project: ProjectState, server: ServerRecord) -> tuple[str, str | None]:
        if server.image_id is not None and (system := catalog.system_image_by_id(server.image_id)) is not None:
            return system.os_flavor, system.os_version
        if server.image_id is not None and (own := project.images.get(server.image_id)) is not None:
            return own.os_flavor, own.os_version
        return "unknown", None

    # --- ssh keys --------------------------------------------------------------------------

    def _ssh_key_ref(self, project: ProjectState, ref: str | int) -> int:
        text = str(ref)
        for key in project.ssh_keys.values():
            if text in (str(key.id), key.name):
                return key.id
        raise invalid_input("ssh_keys", f"ssh key {text!r} not found")

    def ssh_key(self, project: str, key_id: int) -> SshKeyRecord:
        found = self.project(project).ssh_keys.get(key_id)
        if found is None:
            raise not_found("ssh_key")
        return found

    def list_ssh_keys(
        self, project: str, name: str | None, fingerprint_: str | None, selector: str | None
    ) -> list[Json]:
        matches = parse_selector(selector) if selector else None
        return [
            ssh_key_view(k)
            for k in self.project(project).ssh_keys.values()
            if (name is None or k.name == name)
            and (fingerprint_ is None or k.fingerprint == fingerprint_)
            and (matches is None or matches(k.labels))
        ]

    def create_ssh_key(self, project_name: str, body: schemas.CreateSshKey) -> Json:
        project = self.project(project_name)
        print_ = fingerprint(body.public_key)
        if any(k.name == body.name for k in project.ssh_keys.values()):
            raise ApiError(
                "uniqueness_error", "SSH key with the same name already exists", {"fields": [{"name": "name"}]}
            )
        if any(k.fingerprint == print_ for k in project.ssh_keys.values()):
            raise ApiError(
                "uniqueness_error",
                "SSH key with the same fingerprint already exists",
                {"fields": [{"name": "public_key"}]},
            )
        key = SshKeyRecord(
            id=self.cloud.new_id(),
            name=body.name,
            public_key=body.public_key.strip(),
            fingerprint=print_,
            created=now(),
            labels=validate_labels(body.labels or {}),
        )
        project.ssh_keys[key.id] = key
        self.save()
        return {"ssh_key": ssh_key_view(key)}

    def update_ssh_key(self, project_name: str, key_id: int, body: schemas.UpdateNameLabels) -> Json:
        project = self.project(project_name)
        key = self.ssh_key(project_name, key_id)
        if body.name is not None:
            if any(k.name == body.name and k.id != key.id for k in project.ssh_keys.values()):
                raise ApiError(
                    "uniqueness_error", "SSH key with the same name already exists", {"fields": [{"name": "name"}]}
                )
            key.name = body.name
        if body.labels is not None:
            key.labels = validate_labels(body.labels)
        self.save()
        return {"ssh_key": ssh_key_view(key)}

    def delete_ssh_key(self, project_name: str, key_id: int) -> None:
        self.ssh_key(project_name, key_id)
        del self.project(project_name).ssh_keys[key_id]
        self.save()

    # --- images ----------------------------------------------------------------------------

    def image(self, project_name: str, image_id: int) -> Json:
        found = image_view(self.project(project_name), image_id)
        if found is None:
            raise not_found("image")
        return found

    def list_images(self, project_name: str, query: dict[str, list[str]]) -> list[Json]:
        project = self.project(project_name)
        everything = [system_image_view(i) for i in catalog.SYSTEM_IMAGES]
        everything += [own_image_view(i) for i in project.images.values()]
        matches = parse_selector(query["label_selector"][0]) if query.get("label_selector") else None
        names, types = query.get("name"), query.get("type")
        archs, statuses, bound = query.get("architecture"), query.get("status"), query.get("bound_to")
        include_deprecated = (query.get("include_deprecated") or ["false"])[0] == "true"
        return [
            image
            for image in everything
            if (not names or image["name"] in names)
            and (not types or image["type"] in types)
            and (not archs or image["architecture"] in archs)
            and (not statuses or image["status"] in statuses)
            and (not bound or str(image["bound_to"]) in bound)
            and (include_deprecated or image["deprecated"] is None)
            and (matches is None or matches(image["labels"]))
        ]

    def _own_image(self, project_name: str, image_id: int) -> ImageRecord:
        if catalog.system_image_by_id(image_id) is not None:
            raise ApiError("forbidden", "system images cannot be changed")
        found = self.project(project_name).images.get(image_id)
        if found is None:
            raise not_found("image")
        return found

    def update_image(self, project_name: str, image_id: int, body: schemas.UpdateImage) -> Json:
        image = self._own_image(project_name, image_id)
        if body.description is not None:
            image.description = body.description
        if body.labels is not None:
            image.labels = validate_labels(body.labels)
        if body.type == "snapshot":
            # A backup kept as a snapshot: no longer bound to its server, so it outlives it.
            image.type, image.bound_to = "snapshot", None
        self.save()
        return {"image": own_image_view(image)}

    def delete_image(self, project_name: str, image_id: int) -> None:
        image = self._own_image(project_name, image_id)
        if image.delete_protection:
            raise ApiError("protected", "image is delete protected")
        if image.status != "available":
            raise ApiError("locked", "image is still being created")
        if any(a.status == "running" and a.step and a.step.image_id == image_id for a in self._all_actions()):
            raise ApiError("locked", "image is in use by a running action")
        del self.project(project_name).images[image_id]
        self.save()
        # Hetzner answers at once; the disk goes in the background (a restart before leaves it to `down`).
        self._background(self.backend.delete_image, image_id)

    # --- firewalls -------------------------------------------------------------------------

    def firewall(self, project: str, firewall_id: int) -> FirewallRecord:
        found = self.project(project).firewalls.get(firewall_id)
        if found is None:
            raise not_found("firewall")
        return found

    def firewall_json(self, project: str, firewall: FirewallRecord) -> Json:
        return firewall_view(self.project(project), firewall)

    def list_firewalls(self, project: str, name: str | None, selector: str | None) -> list[Json]:
        matches = parse_selector(selector) if selector else None
        return [
            self.firewall_json(project, f)
            for f in self.project(project).firewalls.values()
            if (name is None or f.name == name) and (matches is None or matches(f.labels))
        ]

    def _unique_firewall_name(self, project: ProjectState, name: str, firewall_id: int | None = None) -> str:
        if any(f.name == name and f.id != firewall_id for f in project.firewalls.values()):
            raise ApiError("uniqueness_error", "firewall name is already used", {"fields": [{"name": "name"}]})
        return name

    def create_firewall(self, project_name: str, body: schemas.CreateFirewall) -> Json:
        project = self.project(project_name)
        firewall = FirewallRecord(
            id=self.cloud.new_id(),
            name=self._unique_firewall_name(project, body.name),
            created=now(),
            labels=validate_labels(body.labels or {}),
            rules=_rules(body.rules or []),
        )
        entries = self._resources(project, firewall, body.apply_to or [])
        project.firewalls[firewall.id] = firewall
        actions = []
        if body.rules:
            actions.append(self._firewall_action(project_name, "set_firewall_rules", firewall, None))
        actions += self._apply(project_name, firewall, entries)
        self.save()
        return {"firewall": self.firewall_json(project_name, firewall), "actions": [action_view(a) for a in actions]}

    def update_firewall(self, project_name: str, firewall_id: int, body: schemas.UpdateFirewall) -> Json:
        project = self.project(project_name)
        firewall = self.firewall(project_name, firewall_id)
        if body.name is not None:
            firewall.name = self._unique_firewall_name(project, body.name, firewall.id)
        if body.labels is not None:
            firewall.labels = validate_labels(body.labels)
        self.save()
        return {"firewall": self.firewall_json(project_name, firewall)}

    def delete_firewall(self, project_name: str, firewall_id: int) -> None:
        firewall = self.firewall(project_name, firewall_id)
        if firewall.applied_to:
            raise ApiError("resource_in_use", "firewall is still applied to a resource")
        del self.project(project_name).firewalls[firewall_id]
        self.save()

    def set_rules(self, project_name: str, firewall_id: int, body: schemas.SetRules) -> Json:
        project = self.project(project_name)
        firewall = self.firewall(project_name, firewall_id)
        firewall.rules = _rules(body.rules)
        actions = [self._firewall_action(project_name, "set_firewall_rules", firewall, None)]
        # Hetzner re-applies a changed firewall to every server it covers, one action each.
        for server in project.servers.values():
            if any(_covers(project, entry, server) for entry in firewall.applied_to):
                actions.append(self._firewall_action(project_name, "apply_firewall", firewall, server.id))
        self.save()
        return {"actions": [action_view(a) for a in actions]}

    def apply_to_resources(self, project_name: str, firewall_id: int, body: schemas.ApplyTo) -> Json:
        project = self.project(project_name)
        firewall = self.firewall(project_name, firewall_id)
        entries = self._resources(project, firewall, body.apply_to)
        actions = self._apply(project_name, firewall, entries)
        self.save()
        return {"actions": [action_view(a) for a in actions]}

    def remove_from_resources(self, project_name: str, firewall_id: int, body: schemas.RemoveFrom) -> Json:
        project = self.project(project_name)
        firewall = self.firewall(project_name, firewall_id)
        actions = []
        for resource in body.remove_from:
            if resource.type == "server":
                if resource.server is None:
                    raise invalid_input("remove_from.server", "server is required")
                server_id = resource.server.id
                if server_id not in project.servers:
                    raise ApiError("firewall_resource_not_found", f"server {server_id} not found")
                direct = [e for e in firewall.applied_to if e.type == "server" and e.server_id == server_id]
                if not direct:
                    if any(_covers(project, e, project.servers[server_id]) for e in firewall.applied_to):
                        raise ApiError("firewall_managed_by_label_selector", "firewall is applied by a label selector")
                    continue  # not applied: nothing to do (Hetzner dropped firewall_already_removed)
                firewall.applied_to = [e for e in firewall.applied_to if e not in direct]
                actions.append(self._firewall_action(project_name, "remove_firewall", firewall, server_id))
            else:
                if resource.label_selector is None:
                    raise invalid_input("remove_from.label_selector", "label_selector is required")
                selector = resource.label_selector.selector
                kept = [e for e in firewall.applied_to if not (e.type == "label_selector" and e.selector == selector)]
                if len(kept) != len(firewall.applied_to):
                    firewall.applied_to = kept
                    actions.append(self._firewall_action(project_name, "remove_firewall", firewall, None, selector))
        self.save()
        return {"actions": [action_view(a) for a in actions]}

    def _resources(
        self, project: ProjectState, firewall: FirewallRecord, resources: list[schemas.ResourceIn]
    ) -> list[AppliedTo]:
        entries: list[AppliedTo] = []
        for resource in resources:
            if resource.type == "server":
                if resource.server is None:
                    raise invalid_input("apply_to.server", "server is required")
                server_id = resource.server.id
                server = project.servers.get(server_id)
                if server is None:
                    raise ApiError("firewall_resource_not_found", f"server {server_id} not found")
                if any(e.type == "server" and e.server_id == server_id for e in entries):
                    raise ApiError("server_already_added", f"server {server_id} is listed twice")
                if any(e.type == "server" and e.server_id == server_id for e in firewall.applied_to):
                    raise ApiError("firewall_already_applied", f"firewall is already applied to server {server_id}")
                if server.ipv4 is None and server.ipv6_network is None:
                    raise ApiError("private_net_only_server", "server has no public interface")
                applied = {f.id for f in covering(project, server)}
                if len(applied | {firewall.id}) > FIREWALLS_PER_SERVER:
                    raise ApiError(
                        "resource_limit_exceeded", f"a server takes at most {FIREWALLS_PER_SERVER} firewalls"
                    )
                entries.append(AppliedTo(type="server", server_id=server_id))
            else:
                if resource.label_selector is None:
                    raise invalid_input("apply_to.label_selector", "label_selector is required")
                selector = resource.label_selector.selector
                parse_selector(selector)
                if any(e.type == "label_selector" and e.selector == selector for e in firewall.applied_to):
                    raise ApiError("firewall_already_applied", f"firewall is already applied to {selector!r}")
                entries.append(AppliedTo(type="label_selector", selector=selector))
        return entries

    def _apply(self, project_name: str, firewall: FirewallRecord, entries: list[AppliedTo]) -> list[ActionRecord]:
        firewall.applied_to.extend(entries)
        return [
            self._firewall_action(project_name, "apply_firewall", firewall, entry.server_id, entry.selector)
            for entry in entries
        ]

    def _firewall_action(
        self, project: str, command: str, firewall: FirewallRecord, server_id: int | None, selector: str | None = None
    ) -> ActionRecord:
        resources = [ResourceRef(id=firewall.id, type="firewall")]
        if server_id is not None:
            resources.append(ResourceRef(id=server_id, type="server"))
        step = Step(firewall_id=firewall.id, server_id=server_id, selector=selector)
        return self._action(project, command, resources, step)


def _covers(project: ProjectState, entry: AppliedTo, server: ServerRecord) -> bool:
    return server.id in project.servers and applies_to(entry, server)


def server_firewall(project: ProjectState, server: ServerRecord) -> ServerFirewall:
    """The firewalls that apply to `server` and the union of their rules, each rule once."""
    applied = covering(project, server)
    rules = (
        FirewallRule(
            direction=rule.direction,
            protocol=rule.protocol,
            port=rule.port,
            source_ips=tuple(rule.source_ips),
            destination_ips=tuple(rule.destination_ips),
        )
        for firewall in applied
        for rule in firewall.rules
    )
    return ServerFirewall(firewall_ids=tuple(f.id for f in applied), rules=tuple(dict.fromkeys(rules)))


def _rules(rules: list[schemas.RuleIn]) -> list[Rule]:
    if len(rules) > RULES_LIMIT:
        raise invalid_input("rules", f"at most {RULES_LIMIT} rules")
    checked = []
    for rule in rules:
        if rule.protocol in ("tcp", "udp"):
            match = _PORT.fullmatch(rule.port or "")
            if match is None or any(int(p) > 65535 or int(p) == 0 for p in match.groups() if p):
                raise invalid_input("rules.port", "port must be a port, a range a-b, or 'any' for tcp and udp")
        elif rule.port is not None:
            raise invalid_input("rules.port", f"port is not allowed for {rule.protocol}")
        sources, destinations = rule.source_ips or [], rule.destination_ips or []
        if rule.direction == "in" and (not sources or destinations):
            raise invalid_input("rules.source_ips", "an inbound rule needs source_ips and no destination_ips")
        if rule.direction == "out" and (not destinations or sources):
            raise invalid_input("rules.destination_ips", "an outbound rule needs destination_ips and no source_ips")
        for network in (*sources, *destinations):
            try:
                ipaddress.ip_network(network)
            except ValueError as error:
                raise invalid_input("rules.source_ips", f"{network!r} is not a network") from error
        checked.append(
            Rule(
                direction=rule.direction,
                protocol=rule.protocol,
                port=rule.port,
                source_ips=sources,
                destination_ips=destinations,
                description=rule.description,
            )
        )
    return checked


# --- how each action finishes ------------------------------------------------------------------
# (status while running, status once done) of the power actions; the first is set when they start.
_POWER_STATUS: dict[str, tuple[ServerStatus, ServerStatus]] = {
    "start_server": ("starting", "running"),
    "stop_server": ("stopping", "off"),
    "shutdown_server": ("stopping", "off"),
    "reboot_server": ("running", "running"),
    "reset_server": ("running", "running"),
}
_POWER_HOOK = {
    "start_server": "power_on",
    "stop_server": "power_off",
    "shutdown_server": "shutdown",
    "reboot_server": "reboot",
    "reset_server": "reset",
}
Finisher = Callable[[Emulator, str, Step], Awaitable[None]]


async def _finish_create(emulator: Emulator, name: str, step: Step) -> None:
    project = emulator.project(name)
    server = project.servers.get(step.server_id or 0)
    if server is None:
        return
    await emulator._hook(emulator.backend.create, emulator.machine(name, server))
    # In force before the server first boots: attached at creation means never unprotected.
    await emulator._enforce(name, [server.id])
    starting = any(
        a.status == "running" and a.command == "start_server" and a.step and a.step.server_id == server.id
        for a in project.actions.values()
    )
    server.status = "starting" if starting else "off"


def _power(command: str) -> Finisher:
    async def finish(emulator: Emulator, name: str, step: Step) -> None:
        server = emulator.project(name).servers.get(step.server_id or 0)
        if server is None:
            return
        server.status = _POWER_STATUS[command][0]
        hook = getattr(emulator.backend, _POWER_HOOK[command])
        await emulator._hook(hook, emulator.machine(name, server))
        server.status = _POWER_STATUS[command][1]

    return finish


async def _finish_change_type(emulator: Emulator, name: str, step: Step) -> None:
    project = emulator.project(name)
    server = project.servers.get(step.server_id or 0)
    if server is None or step.server_type_id is None or step.disk_gb is None:
        return
    resized = server.model_copy(update={"server_type_id": step.server_type_id, "primary_disk_size": step.disk_gb})
    await emulator._hook(emulator.backend.resize, emulator.machine(name, resized))
    server.server_type_id, server.primary_disk_size = resized.server_type_id, resized.primary_disk_size
    # Hetzner starts the server again once its disk is copied.
    await emulator._hook(emulator.backend.power_on, emulator.machine(name, server))
    server.status = "running"


async def _finish_rebuild(emulator: Emulator, name: str, step: Step) -> None:
    project = emulator.project(name)
    server = project.servers.get(step.server_id or 0)
    if server is None:
        return
    await emulator._hook(emulator.backend.power_off, emulator.machine(name, server))
    server.image_id = step.image_id
    await emulator._hook(emulator.backend.rebuild, emulator.machine(name, server))
    await emulator._hook(emulator.backend.power_on, emulator.machine(name, server))
    server.status = "running"


async def _finish_create_image(emulator: Emulator, name: str, step: Step) -> None:
    project = emulator.project(name)
    server = project.servers.get(step.server_id or 0)
    image = project.images.get(step.image_id or 0)
    if server is None or image is None:
        return
    size = await emulator._hook(emulator.backend.snapshot, emulator.machine(name, server), image.id)
    image.image_size = float(size)
    image.status = "available"
    await _drop_disks(emulator, name, step)


async def _finish_delete(emulator: Emulator, name: str, step: Step) -> None:
    if step.machine is not None:
        await emulator._hook(emulator.backend.delete, step.machine)
        await emulator._enforce(name, [step.machine.server_id])
    await _drop_disks(emulator, name, step)


async def _drop_disks(emulator: Emulator, name: str, step: Step) -> None:
    """The disks of the images the action deleted (a backup's, with its server or its slot)."""
    for image_id in step.dropped_images:
        await emulator._hook(emulator.backend.delete_image, image_id)


async def _finish_firewall(emulator: Emulator, name: str, step: Step) -> None:
    """apply_firewall, remove_firewall: the servers concerned get what filters them now."""
    servers = emulator.project(name).servers.values()
    if step.server_id is not None:
        targets = [step.server_id]
    else:
        matches = parse_selector(step.selector) if step.selector else None
        targets = [s.id for s in servers if matches is not None and matches(s.labels)]
    await emulator._enforce(name, targets)


_FINISHERS: dict[str, Finisher] = {
    "create_server": _finish_create,
    "change_server_type": _finish_change_type,
    "rebuild_server": _finish_rebuild,
    "create_image": _finish_create_image,
    "delete_server": _finish_delete,
    "disable_backup": _drop_disks,
    # set_firewall_rules itself changes no server: Hetzner follows it with apply_firewall per server.
    "apply_firewall": _finish_firewall,
    "remove_firewall": _finish_firewall,
    **{command: _power(command) for command in _POWER_STATUS},
}


def _server_off(project: ProjectState, step: Step) -> None:
    if (server := project.servers.get(step.server_id or 0)) is not None:
        server.status = "off"


def _server_on(project: ProjectState, step: Step) -> None:
    if (server := project.servers.get(step.server_id or 0)) is not None:
        server.status = "running"


def _drop_image(project: ProjectState, step: Step) -> None:
    project.images.pop(step.image_id or 0, None)


# What a failed hook leaves behind: a server that did not come up is off, one that did not go down runs.
_FAILURE_STATUS: dict[str, Callable[[ProjectState, Step], None]] = {
    "create_server": _server_off,
    "start_server": _server_off,
    "change_server_type": _server_off,
    "rebuild_server": _server_off,
    "stop_server": _server_on,
    "shutdown_server": _server_on,
    "create_image": _drop_image,
}

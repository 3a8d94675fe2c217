"""The emulator's state, as it is kept on disk: one `Cloud` with a state per project."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from lab.hcloud_api.backend import MachineSpec

ServerStatus = Literal["initializing", "starting", "running", "stopping", "off", "deleting", "migrating", "rebuilding"]
ActionStatus = Literal["running", "success", "error"]


class ServerRecord(BaseModel):
    id: int
    name: str
    status: ServerStatus
    created: datetime
    server_type_id: int
    location: str
    image_id: int | None
    primary_disk_size: int
    labels: dict[str, str] = {}
    delete_protection: bool = False
    rebuild_protection: bool = False
    ipv4: str | None
    ipv4_id: int | None
    ipv6_network: str | None
    ipv6_id: int | None
    ssh_key_ids: list[int] = []
    user_data: str | None = None
    # Set while Hetzner's automatic backups are on: the daily window (UTC hours) they are taken in.
    backup_window: str | None = None


class Rule(BaseModel):
    direction: Literal["in", "out"]
    protocol: Literal["tcp", "udp", "icmp", "esp", "gre"]
    port: str | None = None
    source_ips: list[str] = []
    destination_ips: list[str] = []
    description: str | None = None


class AppliedTo(BaseModel):
    type: Literal["server", "label_selector"]
    server_id: int | None = None
    selector: str | None = None


class FirewallRecord(BaseModel):
    id: int
    name: str
    created: datetime
    labels: dict[str, str] = {}
    rules: list[Rule] = []
    applied_to: list[AppliedTo] = []


class SshKeyRecord(BaseModel):
    id: int
    name: str
    public_key: str
    fingerprint: str
    created: datetime
    labels: dict[str, str] = {}


class ImageRecord(BaseModel):
    """A project's own image: a snapshot, or a backup bound to the server it was taken of (deleted
    with that server); system images come from the catalogue."""

    id: int
    type: Literal["snapshot", "backup"] = "snapshot"
    bound_to: int | None = None
    status: Literal["creating", "available"]
    description: str
    created: datetime
    created_from_id: int
    created_from_name: str
    disk_size: int
    image_size: float | None = None
    os_flavor: str
    os_version: str | None
    architecture: Literal["x86", "arm"]
    labels: dict[str, str] = {}
    delete_protection: bool = False


class RecordValue(BaseModel):
    value: str
    comment: str | None = None


class RRSetRecord(BaseModel):
    """The records of one name and type in a zone (`@` is the zone's apex)."""

    name: str
    type: str
    ttl: int | None = None
    labels: dict[str, str] = {}
    change_protection: bool = False
    records: list[RecordValue]


class Nameserver(BaseModel):
    address: str
    port: int = 53
    tsig_algorithm: str | None = None
    tsig_key: str | None = None


class ZoneRecord(BaseModel):
    """A DNS zone of Hetzner's Cloud API; a primary zone holds its RRsets, keyed `name/type`."""

    id: int
    name: str
    created: datetime
    mode: Literal["primary", "secondary"]
    ttl: int
    labels: dict[str, str] = {}
    delete_protection: bool = False
    primary_nameservers: list[Nameserver] = []
    # The SOA record's serial: every change of the zone's records counts it up.
    serial: int
    rrsets: dict[str, RRSetRecord] = {}


class ResourceRef(BaseModel):
    id: int
    type: Literal["server", "firewall", "image", "zone"]


class ActionFailure(BaseModel):
    code: str
    message: str


class Step(BaseModel):
    """What finishing a running action still takes; kept so a restart can finish it."""

    # Wait for this action first (a server starts once it is created).
    after: int | None = None
    server_id: int | None = None
    machine: MachineSpec | None = None
    server_type_id: int | None = None
    disk_gb: int | None = None
    image_id: int | None = None
    firewall_id: int | None = None
    # The label selector a firewall action applies or removes (its servers get their rules again).
    selector: str | None = None
    # Images the action deleted, whose disks go once it has done the rest.
    dropped_images: list[int] = []


class ActionRecord(BaseModel):
    id: int
    command: str
    status: ActionStatus
    progress: int = 0
    started: datetime
    finished: datetime | None = None
    resources: list[ResourceRef]
    error: ActionFailure | None = None
    step: Step | None = None


class ProjectState(BaseModel):
    servers: dict[int, ServerRecord] = {}
    firewalls: dict[int, FirewallRecord] = {}
    ssh_keys: dict[int, SshKeyRecord] = {}
    images: dict[int, ImageRecord] = {}
    zones: dict[int, ZoneRecord] = {}
    actions: dict[int, ActionRecord] = {}


class Cloud(BaseModel):
    # Ids are unique across projects, as Hetzner's are.
    last_id: int = 1_000_000
    projects: dict[str, ProjectState] = Field(default_factory=dict)

    def new_id(self) -> int:
        self.last_id += 1
        return self.last_id

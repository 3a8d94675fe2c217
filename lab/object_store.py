"""The stacks' state backend in the lab: SeaweedFS, an S3-compatible store an operator runs on a host of
their own, as production uses Hetzner's Object Storage.

One `weed server` process (the pinned build, `toolchain/seaweedfs`): a master, a volume server and a
filer on loopback, where nothing but the process itself reaches them (they check no credentials), and
the S3 gateway on the host's address, which admits only the identities of its config: a request
signed with any other key, or not signed, is refused. Its data (volumes, the filer's metadata) lives
in one directory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

import toolchain
from lab.netns import within
from lab.world import LabError

REGION = "fsn1"
T = TypeVar("T")


@dataclass(frozen=True)
class Identity:
    """A key pair of the store's and what it may do: SeaweedFS's actions (`Read`, `Write`, `List`,
    `Admin`), each limited to a bucket as `Action:bucket`."""

    access_key: str
    secret_key: str
    actions: tuple[str, ...]

    def environment(self) -> dict[str, str]:
        """The variables the CLI's S3 driver (and boto3) read the key from."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


@dataclass(frozen=True)
class ObjectStore:
    namespace: str
    address: str
    port: int
    directory: Path

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}"

    def command(self, identities: dict[str, Identity]) -> list[str]:
        """`weed server` with its filer and S3 gateway, its config (mode 0600: it holds the secrets)
        written into the data directory."""
        weed = toolchain.bin_dir() / "weed"
        if not weed.is_file():
            raise LabError(f"{weed}: the object store is not built (python -m toolchain build)")
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.directory / "identities.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps({"identities": [_identity(name, key) for name, key in identities.items()]}))
        return [
            str(weed),
            "server",
            *("-ip=127.0.0.1", f"-dir={data}", "-master.telemetry=false", "-volume.preStopSeconds=0"),
            *("-filer", f"-filer.localSocket={self.directory / 'filer.sock'}"),
            *("-s3", f"-s3.ip.bind={self.address}", f"-s3.port={self.port}", f"-s3.config={config}"),
            *(f"-s3.localSocket={self.directory / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0"),
        ]

    def client(self, identity: Identity) -> BaseClient:
        """boto3's S3 client with the identity's key; its requests only work inside `call`."""
        config = Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=30)
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=identity.access_key,
            aws_secret_access_key=identity.secret_key,
            config=config,
        )

    def call(self, request: Callable[[], T]) -> T:
        """A request to the store, made from the store's host (the lab's addresses are reachable only
        inside its namespaces)."""
        return within(self.namespace, request)

    def accepts_writes(self, identity: Identity, bucket: str) -> bool:
        """Whether an object can be written and deleted: on a fresh start, the first write waits for
        the filer to join the cluster and the master to grow volumes."""
        s3 = self.client(identity)

        def write_and_delete() -> None:
            s3.put_object(Bucket=bucket, Key="lab-ready", Body=b"")
            s3.delete_object(Bucket=bucket, Key="lab-ready")

        try:
            self.call(write_and_delete)
        except (BotoCoreError, ClientError):
            return False
        return True

    def keys(self, identity: Identity, bucket: str, prefix: str) -> list[str]:
        """The keys in the bucket under `prefix`."""
        s3 = self.client(identity)

        def listing() -> list[str]:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            return [item["Key"] for page in pages for item in page.get("Contents", [])]

        return self.call(listing)


def _identity(name: str, key: Identity) -> dict[str, Any]:
    """One entry of SeaweedFS's identities config (`-s3.config`)."""
    credentials = [{"accessKey": key.access_key, "secretKey": key.secret_key}]
    return {"name": name, "credentials": credentials, "actions": list(key.actions)}

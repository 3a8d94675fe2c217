"""The stack locks of a self-managed backend, read and deleted one by one.

The CLI locks a stack for each operation that writes it (pulumi `pkg/backend/diy/lock.go`): a JSON
file `.pulumi/locks/organization/<project>/<stack>/<uuid>.json` in the backend, naming its holder,
`{"pid", "username", "hostname", "timestamp"}`. A CLI killed mid-operation leaves its file behind,
and every later operation fails on it until it is deleted. `pulumi cancel` deletes every lock file
of the stack, an operator's too; the provisioner deletes only those that name a CLI of the operation
that did not end cleanly (its `host:pid` is in the stack's holder record, provisioner.store).

Backends: a directory (`file://`) and an S3-compatible bucket (`s3://bucket[/prefix]?endpoint=…&
region=…&use_path_style=true`, credentials from the AWS_* variables the CLI's S3 driver reads too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict

LOCKS = ".pulumi/locks/organization"


class StackLock(BaseModel):
    model_config = ConfigDict(extra="ignore")

    key: str
    pid: int
    username: str
    hostname: str
    timestamp: str

    @property
    def holder(self) -> str:
        """`host:pid`, as the provisioner names each CLI it starts."""
        return f"{self.hostname}:{self.pid}"

    def __str__(self) -> str:
        return f"{self.username}@{self.hostname} (pid {self.pid}) at {self.timestamp}"


class Bucket(Protocol):
    def keys(self, prefix: str) -> list[str]: ...
    def read(self, key: str) -> bytes: ...
    def delete(self, key: str) -> None: ...


class DirectoryBucket:
    def __init__(self, root: Path) -> None:
        self.root = root

    def keys(self, prefix: str) -> list[str]:
        directory = self.root / prefix
        if not directory.is_dir():
            return []
        return [f"{prefix}{path.name}" for path in sorted(directory.iterdir()) if path.is_file()]

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)


class S3Bucket:
    def __init__(self, url: str) -> None:
        import boto3
        from botocore.config import Config

        parts = urlsplit(url)
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        path_style = "true" in (query.get("use_path_style"), query.get("s3ForcePathStyle"))
        self.bucket, self.prefix = parts.netloc, parts.path.strip("/") + "/" if parts.path.strip("/") else ""
        self.client = boto3.client(
            "s3",
            endpoint_url=query.get("endpoint"),
            region_name=query.get("region"),
            config=Config(s3={"addressing_style": "path" if path_style else "auto"}),
        )

    def keys(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        return [item["Key"].removeprefix(self.prefix) for page in pages for item in page.get("Contents", [])]

    def read(self, key: str) -> bytes:
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except self.client.exceptions.NoSuchKey as error:
            raise FileNotFoundError(key) from error
        return body

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)


def open_bucket(backend_url: str) -> Bucket:
    if backend_url.startswith("file://"):
        return DirectoryBucket(Path(urlsplit(backend_url).path))
    if backend_url.startswith("s3://"):
        return S3Bucket(backend_url)
    raise ValueError(f"stack locks are read from file:// and s3:// backends only, not {backend_url.split(':')[0]}")


def stack_locks(bucket: Bucket, project: str, stack: str) -> list[StackLock]:
    """The stack's lock files, each with the holder it names (one deleted meanwhile is left out)."""
    locks = []
    for key in bucket.keys(f"{LOCKS}/{project}/{stack}/"):
        try:
            content = json.loads(bucket.read(key))
        except FileNotFoundError:
            continue
        locks.append(StackLock.model_validate({**content, "key": key}))
    return locks

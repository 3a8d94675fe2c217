"""A stand-in for the OpenClaw Gateway image, pushed to the lab's registry like a real release.

Debian's static busybox serves the gateway port behind HTTP basic auth, with the credentials taken
from the same environment variables as the real gateway, plus an unauthenticated metrics listener.
Like the real gateway it keeps its state in /data: a first start writes an instance id there, and
every start serves it, so a test can tell whether the data outlived the container.

    python -m lab.image push REGISTRY_URL REPOSITORY VERSION... --ca CA_FILE --server-name NAME

pushes one image per version (Docker's image manifest v2 over the registry's HTTP API) and prints
`{"VERSION": "sha256:..."}`. It runs inside the lab's network, where the registry is.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io
import json
import socket
import ssl
import sys
import tarfile
from pathlib import Path
from urllib.parse import urlsplit

from components.gateway import CONTAINER_DATA_DIR, GATEWAY_PASSWORD_ENV, GATEWAY_USER_ENV
from config import BaselinePolicy

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "httpd", "nc", "mkdir", "printf", "echo", "cat", "cp", "sleep", "wget")
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _entrypoint(policy: BaselinePolicy, version: str) -> str:
    data = CONTAINER_DATA_DIR
    return f"""#!/bin/sh
set -eu
mkdir -p /www /metrics {data}
[ -s {data}/instance-id ] || cat /proc/sys/kernel/random/uuid > {data}/instance-id
cp {data}/instance-id /www/instance-id
echo '{version}' > /www/version
echo 'OpenClaw Gateway (lab stand-in {version})' > /www/index.html
echo 'openclaw_gateway_up 1' > /metrics/index.html
printf '/:%s:%s\\n' "${GATEWAY_USER_ENV}" "${GATEWAY_PASSWORD_ENV}" > /etc/httpd.conf
: > /etc/metrics.conf
httpd -p {policy.inbound.metrics_port} -h /metrics -c /etc/metrics.conf
exec httpd -f -p {policy.inbound.gateway_port} -h /www -c /etc/httpd.conf
"""


def _add(
    archive: tarfile.TarFile,
    name: str,
    *,
    data: bytes = b"",
    mode: int = 0o644,
    kind: bytes = tarfile.REGTYPE,
    link: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
    archive.addfile(info, io.BytesIO(data) if data else None)


def layer(version: str) -> bytes:
    """The image's one layer, as an uncompressed tar; byte-for-byte the same for the same version."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for directory in ("bin", "etc", "tmp"):
            _add(archive, directory, kind=tarfile.DIRTYPE, mode=0o755)
        _add(archive, "bin/busybox", data=BUSYBOX.read_bytes(), mode=0o755)
        for applet in APPLETS:
            _add(archive, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox", mode=0o777)
        _add(archive, "etc/passwd", data=b"root:x:0:0:root:/:/bin/sh\n")
        _add(archive, "entrypoint.sh", data=_entrypoint(BaselinePolicy(), version).encode(), mode=0o755)
    return buffer.getvalue()


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


class _PinnedAddressConnection(http.client.HTTPSConnection):
    """HTTPS to a name's certificate at a given address (the pusher has no resolver of its own)."""

    def __init__(self, address: str, server_name: str, port: int, context: ssl.SSLContext) -> None:
        super().__init__(server_name, port, context=context, timeout=30)
        self.address = address

    def connect(self) -> None:
        raw = socket.create_connection((self.address, self.port), timeout=self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)  # type: ignore[attr-defined]


class Registry:
    """The few calls of the registry HTTP API (v2) that a push needs."""

    def __init__(self, url: str, ca_file: Path, server_name: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None
        self.address, self.port, self.server_name = parts.hostname, parts.port or 443, server_name
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def _request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        connection = _PinnedAddressConnection(self.address, self.server_name, self.port, self.context)
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        response.read()
        connection.close()
        return response

    def push_blob(self, repository: str, blob: bytes) -> None:
        digest = _digest(blob)
        if self._request("HEAD", f"/v2/{repository}/blobs/{digest}").status == 200:
            return
        started = self._request("POST", f"/v2/{repository}/blobs/uploads/")
        location = started.getheader("Location")
        if started.status != 202 or location is None:
            raise RuntimeError(f"registry refused an upload: {started.status}")
        upload = urlsplit(location)
        query = f"{upload.query}&digest={digest}" if upload.query else f"digest={digest}"
        finished = self._request("PUT", f"{upload.path}?{query}", blob, {"Content-Type": "application/octet-stream"})
        if finished.status != 201:
            raise RuntimeError(f"registry refused blob {digest}: {finished.status}")

    def push_manifest(self, repository: str, tag: str, manifest: bytes) -> str:
        response = self._request("PUT", f"/v2/{repository}/manifests/{tag}", manifest, {"Content-Type": MANIFEST_TYPE})
        if response.status != 201:
            raise RuntimeError(f"registry refused the manifest: {response.status}")
        return _digest(manifest)


def push(registry: Registry, repository: str, version: str) -> str:
    """Push the stand-in image as REPOSITORY:VERSION; returns its manifest digest."""
    tar = layer(version)
    compressed = gzip.compress(tar, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/entrypoint.sh"]},
            "rootfs": {"type": "layers", "diff_ids": [_digest(tar)]},
        },
        sort_keys=True,
    ).encode()
    for blob in (compressed, config):
        registry.push_blob(repository, blob)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": _digest(config)},
            "layers": [{"mediaType": LAYER_TYPE, "size": len(compressed), "digest": _digest(compressed)}],
        },
        sort_keys=True,
    ).encode()
    return registry.push_manifest(repository, version, manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.image", description=__doc__)
    parser.add_argument("action", choices=("push",))
    parser.add_argument("registry_url")
    parser.add_argument("repository")
    parser.add_argument("versions", nargs="+")
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--server-name", required=True, help="the name on the registry's certificate")
    args = parser.parse_args(argv)
    registry = Registry(args.registry_url, args.ca, args.server_name)
    print(json.dumps({version: push(registry, args.repository, version) for version in args.versions}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The provisioner's two listeners, as a real `serve` process runs them: the public one serves the
billing webhook and a health check only, and reads no more of a body than it allows, whatever the
headers say; the operator and review API and the metrics are on the private one."""

from __future__ import annotations

import select
import socket
import time
import urllib.error
import urllib.request

import psutil
import pytest

from tests.provisioner.conftest import TOKEN, Provisioner, wait_for
from tests.provisioner.events import signup

PUSHED = 48 * 1024 * 1024
PIECE = b"x" * 65536


def _status(url: str, method: str = "GET", token: str | None = None) -> int:
    request = urllib.request.Request(url, data=b"{}" if method == "POST" else None, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_the_public_listener_serves_the_webhook_and_a_health_check_only(sqlite_provisioner: Provisioner) -> None:
    provisioner = sqlite_provisioner
    public, private = provisioner.url, provisioner.private_url
    assert _status(f"{public}/healthz") == 200
    assert provisioner.post(signup("acme"))[0] == 200
    for path in ("/jobs", "/jobs/evt_x", "/customers/acme", "/stacks", "/stacks/customer-acme/settings"):
        assert _status(public + path, token=TOKEN) == 404, path
    for path in ("/metrics", "/readyz"):
        assert _status(public + path) == 404, path
    assert _status(f"{public}/deploys", "POST", TOKEN) == 404

    assert _status(f"{private}/webhooks/billing", "POST") == 404
    assert _status(f"{private}/jobs") == 401, "the private listener still wants the operator token"
    assert _status(f"{private}/jobs", token=TOKEN) == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert _status(private + path) == 200, path


def _push(provisioner: Provisioner, head: bytes, piece: bytes) -> tuple[bytes, int]:
    """Send `head`, then `piece` after `piece` (up to 48 MiB) until the server answers or closes the
    connection; its answer and the bytes sent."""
    host, port = provisioner.url.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=20) as connection:
        connection.sendall(head)
        try:
            while sent < PUSHED and not select.select([connection], [], [], 0)[0]:
                connection.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed meanwhile
        try:
            return connection.recv(4096), sent
        except ConnectionResetError:
            return b"", sent


def _head(*headers: str) -> bytes:
    return ("POST /webhooks/billing HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode()


@pytest.mark.parametrize(
    "head,piece,status",
    [
        # A chunked body has no length to check beforehand: what is read is counted.
        (_head("Transfer-Encoding: chunked"), b"10000\r\n" + PIECE + b"\r\n", b"413"),
        # The lie that made the webhook read 48 MiB: a small Content-Length over a chunked body.
        (_head("Content-Length: 10", "Transfer-Encoding: chunked"), b"10000\r\n" + PIECE + b"\r\n", b"400"),
        # More bytes than the Content-Length: the rest is never read as this request's body.
        (_head("Content-Length: 10"), PIECE, b"400"),
    ],
    ids=["chunked", "content-length-and-chunked", "longer-than-content-length"],
)
def test_a_body_is_read_no_further_than_the_limit_whatever_the_headers_say(
    sqlite_provisioner: Provisioner, head: bytes, piece: bytes, status: bytes
) -> None:
    provisioner = sqlite_provisioner
    serve = psutil.Process(provisioner.processes["serve"].pid)
    assert provisioner.post(signup("warm-up"))[0] == 200
    before = serve.memory_info().rss
    answer, sent = _push(provisioner, head, piece)
    grown = serve.memory_info().rss - before
    assert answer.startswith(b"HTTP/1.1 " + status), (answer[:200], sent)
    assert grown < 8 * 1024 * 1024, f"the server grew by {grown / 2**20:.1f} MiB while {sent / 2**20:.1f} MiB were sent"
    assert sent < PUSHED, "the server closed the connection instead of reading the rest"
    assert provisioner.post(signup("acme"))[0] == 200, "and it goes on serving"


def test_a_body_that_takes_too_long_is_refused(sqlite_provisioner: Provisioner) -> None:
    provisioner = sqlite_provisioner
    provisioner.kill("serve")
    provisioner.env["CLAW_HTTP_BODY_TIMEOUT_SECONDS"] = "1"
    provisioner.start("serve")
    host, port = provisioner.url.removeprefix("http://").split(":")
    wait_for("the webhook", lambda: socket.socket().connect_ex((host, int(port))) == 0)
    with socket.create_connection((host, int(port)), timeout=20) as connection:
        connection.sendall(_head("Content-Length: 100"))
        started, sent = time.monotonic(), 0
        # A byte every 0.2 s: each arrives in time, the whole body never does.
        while sent < 100 and not select.select([connection], [], [], 0.2)[0]:
            connection.sendall(b"{")
            sent += 1
        answer = connection.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert sent < 100 and time.monotonic() - started < 10, "refused before the body was complete"

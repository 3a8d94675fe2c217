"""Drives a resource provider plugin over gRPC as the Pulumi engine does, and writes down its answers.

The plugin is started the way the engine starts it (its engine address as the only argument, its
port read from the first line it prints); an engine of ours answers its log calls, which are part
of what a provider answers. Values that differ from run to run (ports, keys, random ids) travel as
`${NAME}` placeholders: filled in before a request is sent, put back into what comes out.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format, message_factory
from google.rpc import status_pb2
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc, provider_pb2

SERVICE = provider_pb2.DESCRIPTOR.services_by_name["ResourceProvider"]
CALL_TIMEOUT_SECONDS = 120
START_TIMEOUT_SECONDS = 60


class EngineLog(engine_pb2_grpc.EngineServicer):
    """The engine's side of a provider's log calls: every message of a call.

    A command's stdout and stderr are read by goroutines of their own, so their lines reach the
    engine in no defined order; the messages are therefore kept sorted, compared as a set."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []

    def Log(self, request: engine_pb2.LogRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        entry = {
            "severity": engine_pb2.LogSeverity.Name(request.severity),
            "message": request.message,
            "ephemeral": request.ephemeral,
        }
        with self._lock:
            self._entries.append(entry)
        return empty_pb2.Empty()

    def take(self) -> list[dict[str, Any]]:
        with self._lock:
            entries, self._entries = self._entries, []
        return sorted(entries, key=lambda entry: (entry["severity"], entry["message"]))


@dataclass(frozen=True)
class Answer:
    response: dict[str, Any] | None
    error: dict[str, str] | None
    logs: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"response": self.response, "error": self.error, "logs": self.logs}


@dataclass
class Placeholders:
    """Live values by name. Strings holding `${NAME}` get the value; a string that is exactly
    `${NAME}` of a non-string value (a port) becomes that value."""

    values: dict[str, Any] = field(default_factory=dict)

    def fill(self, document: Any) -> Any:
        if isinstance(document, dict):
            return {key: self.fill(value) for key, value in document.items()}
        if isinstance(document, list):
            return [self.fill(value) for value in document]
        if isinstance(document, str):
            exact = re.fullmatch(r"\$\{(\w+)\}", document)
            if exact and not isinstance(self.values[exact.group(1)], str):
                return self.values[exact.group(1)]
            return re.sub(r"\$\{(\w+)\}", lambda match: str(self.values[match.group(1)]), document)
        return document

    def restore(self, document: Any) -> Any:
        """The inverse of `fill`: every live value put back as its placeholder, longest first; a
        number only where it stands alone, not inside a longer run of letters and digits."""
        if isinstance(document, dict):
            return {key: self.restore(value) for key, value in document.items()}
        if isinstance(document, list):
            return [self.restore(value) for value in document]
        if isinstance(document, str):
            for name, value in sorted(self.values.items(), key=lambda item: -len(str(item[1]))):
                if isinstance(value, str):
                    document = document.replace(value, f"${{{name}}}")
                else:
                    document = re.sub(rf"(?<![0-9A-Za-z]){value}(?![0-9A-Za-z])", f"${{{name}}}", document)
            return document
        if isinstance(document, int | float) and not isinstance(document, bool):
            for name, value in self.values.items():
                if not isinstance(value, str) and value == document:
                    return f"${{{name}}}"
        return document


class Provider:
    """One running plugin and the stub to call it."""

    def __init__(self, binary: Path, engine_address: str) -> None:
        self.binary = binary
        self.process = subprocess.Popen(
            [str(binary), engine_address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        port = self._read_port()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(self.channel).result(timeout=START_TIMEOUT_SECONDS)

    def _read_port(self) -> int:
        assert self.process.stdout is not None
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(START_TIMEOUT_SECONDS)
        line = found[0].strip() if found else ""
        if not line.isdigit():
            self.close()
            raise RuntimeError(f"{self.binary} printed no port: {line!r}")
        return int(line)

    def call(self, method: str, request: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
        descriptor = SERVICE.methods_by_name[method]
        request_type = message_factory.GetMessageClass(descriptor.input_type)
        response_type = message_factory.GetMessageClass(descriptor.output_type)
        stub = self.channel.unary_unary(
            f"/{SERVICE.full_name}/{method}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        try:
            response = stub(json_format.ParseDict(request, request_type()), timeout=CALL_TIMEOUT_SECONDS)
        except grpc.RpcError as error:
            return None, _error(error)
        return json_format.MessageToDict(response), None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _error(error: grpc.RpcError) -> dict[str, Any]:
    """A failed call: its code, message and details (a create that failed after making something
    sends what it made as ErrorResourceInitFailed)."""
    answer: dict[str, Any] = {"code": error.code().name, "message": error.details() or ""}  # type: ignore[attr-defined]
    for key, value in error.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        details = []
        for detail in status.details:
            failed = provider_pb2.ErrorResourceInitFailed()
            details.append(json_format.MessageToDict(failed) if detail.Unpack(failed) else {"type": detail.type_url})
        answer["details"] = details
    return answer


@contextmanager
def running(binary: Path) -> Iterator[tuple[Provider, EngineLog]]:
    """The plugin at `binary` with an engine of ours to log to."""
    log = EngineLog()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    engine_pb2_grpc.add_EngineServicer_to_server(log, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    provider = Provider(binary, f"127.0.0.1:{port}")
    try:
        yield provider, log
    finally:
        provider.close()
        server.stop(grace=None)


# What a new key or a new random id looks like: their shape is upstream's answer, their value is not.
_RANDOM = (
    (re.compile(r"(-----BEGIN ([A-Z ]+)-----\n)[A-Za-z0-9+/=\n]+?(\n-----END \2-----)"), r"\1<base64>\3"),
    (re.compile(r"\b(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+) [A-Za-z0-9+/=]+"), r"\1 <base64>"),
    (re.compile(r"SHA256:[A-Za-z0-9+/]{43}"), "SHA256:<digest>"),
    (re.compile(r"\b(?:[0-9a-f]{2}:){15}[0-9a-f]{2}\b"), "<md5>"),
    (re.compile(r"\b[0-9a-f]{40}\b"), "<sha1>"),
)


def normalise_random(document: Any, id_pattern: re.Pattern[str] | None = None) -> Any:
    """`document` with every randomly generated value replaced by a description of its shape."""
    if isinstance(document, dict):
        return {key: normalise_random(value, id_pattern) for key, value in document.items()}
    if isinstance(document, list):
        return [normalise_random(value, id_pattern) for value in document]
    if isinstance(document, str):
        for pattern, replacement in _RANDOM:
            document = pattern.sub(replacement, document)
        if id_pattern is not None:
            document = id_pattern.sub(r"\g<stem><hex>", document)
        return document
    return document


@dataclass(frozen=True)
class Step:
    """One request of a transcript. `request` may hold `${NAME}` placeholders and, anywhere in it,
    `{"$response": [STEP, key, ...]}`: that part of an earlier step's live response."""

    name: str
    method: str
    request: dict[str, Any]
    about: str = ""


def _resolve(document: Any, responses: Mapping[str, dict[str, Any] | None]) -> Any:
    if isinstance(document, dict):
        if set(document) == {"$response"}:
            step, *path = document["$response"]
            value: Any = responses[step]
            for key in path:
                value = value[key]
            return value
        return {key: _resolve(value, responses) for key, value in document.items()}
    if isinstance(document, list):
        return [_resolve(value, responses) for value in document]
    return document


def run_steps(
    binary: Path,
    steps: list[Step],
    placeholders: Placeholders,
    normalise: Callable[[Any], Any],
) -> list[dict[str, Any]]:
    """Every step sent to a fresh plugin in order: each with its answer, live values put back as
    placeholders and random ones as their shape."""
    exchanges: list[dict[str, Any]] = []
    responses: dict[str, dict[str, Any] | None] = {}
    with running(binary) as (provider, log):
        for step in steps:
            request = placeholders.fill(_resolve(step.request, responses))
            response, error = provider.call(step.method, request)
            responses[step.name] = response
            answer = Answer(response, error, log.take())
            exchanges.append(
                {
                    "name": step.name,
                    "about": step.about,
                    "method": step.method,
                    "request": step.request,
                    # Random values first: a port's digits may occur inside a key's base64.
                    **placeholders.restore(normalise(answer.as_json())),
                }
            )
    return exchanges


def write_transcript(path: Path, header: dict[str, Any], exchanges: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**header, "exchanges": exchanges}, indent=1, sort_keys=False) + "\n")

"""A stand-in pulumi CLI for the provisioner's tests: the real `AutomationRunner` drives it through
the Automation API, exactly as it drives the real CLI (through the provisioner's own
`provisioner/bin/pulumi`, as its CLAW_PULUMI_BINARY).

It speaks the commands the SDK issues for this project (`version`, `stack select|init|output|
history|export|import|rm`, `config`, `config set-all|rm-all`, `preview`, `up`, `refresh`, `destroy`,
`cancel`) and keeps the behaviour of the real CLI that the provisioner has to live with:
- a stack lock (a file per operation where a self-managed backend at PULUMI_BACKEND_URL keeps it,
  naming its holder as the CLI's does: pid, user, host, time): an operation on a locked stack fails
  with "the stack is currently locked"; a CLI killed mid-operation leaves its lock and a pending
  operation in the state behind; `cancel` deletes the lock files;
- SIGINT cancels gracefully: the operation stops, the lock is released, the exit code is 255;
- `config set-all` adds and updates keys and never removes any; `config rm-all` removes; the
  stack's settings file lives in the workspace directory it runs in;
- `preview` and `up` validate the stack config with the program's own loader, as the program would;
  `preview` writes the plan it is asked to save (`--save-plan`) and streams its summary event to the
  Automation API over the gRPC event stream (`--event-log tcp://…`) as CLIs since 3.206 do.

It records each operation (start, end, outcome, config, arguments) as a file in CLAW_STANDIN_DIR,
takes CLAW_STANDIN_SECONDS (a stubborn one, CLAW_STANDIN_STUBBORN, ignores SIGINT meanwhile), and
fails for customers whose id starts with "doomed".
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.bundle import Bundle

RECORDS = "CLAW_STANDIN_DIR"
SECONDS = "CLAW_STANDIN_SECONDS"
# Set: SIGINT changes nothing, as for a real CLI whose in-flight step never finishes.
STUBBORN = "CLAW_STANDIN_STUBBORN"
VERSION = "v3.272.0"
LOCKED = "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end"
_WITH_VALUE = {"--stack", "--policy-pack", "--color", "--exec-kind", "--page-size", "--page", "--file"}
_WITH_VALUE |= {"--secrets-provider", "--plaintext", "--secret", "--event-log", "--client", "--config-file"}
_WITH_VALUE |= {"--save-plan", "--plan"}


_DOING = {"up": "Updating", "destroy": "Destroying", "refresh": "Refreshing"}
# The digest `up` reports for the baseline: what the health gate compares the host's bundle with (the
# stand-in's hosts, tests/provisioner/hosts.py, have an empty one installed).
EMPTY_BASELINE = Bundle(files=()).digest


def _write(path: Path, record: dict[str, Any]) -> None:
    # Atomically: the tests read these files while the CLI writes them.
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(record))
    partial.rename(path)


def operations(directory: Path) -> list[dict[str, Any]]:
    """Every operation the stand-in started, oldest first; one killed mid-way has no "end"."""
    found = [json.loads(path.read_text()) for path in directory.glob("*.json")]
    return sorted(found, key=lambda record: record["start"])


def records(directory: Path, action: str | None = None) -> list[dict[str, Any]]:
    """Operations that completed, oldest first."""
    return [
        record
        for record in operations(directory)
        if record.get("outcome") == "done" and (action is None or record["action"] == action)
    ]


def backend_dir(directory: Path) -> Path:
    """The self-managed backend's directory: the tests' CLAW_PULUMI_BACKEND_URL."""
    return directory / "backend"


def lock_dir(backend: Path, stack: str) -> Path:
    # pulumi pkg/backend/diy: .pulumi/locks/<organization/project/stack>/<uuid>.json
    return backend / ".pulumi" / "locks" / "organization" / "clawhosters" / stack


def locks(directory: Path) -> list[Path]:
    return sorted(lock_dir(backend_dir(directory), "*").parent.glob("*/*.json"))


class _Stack:
    def __init__(self, name: str) -> None:
        self.name = name
        self.customer = name.removeprefix("customer-")
        self.records = Path(os.environ[RECORDS])
        backend = Path(os.environ["PULUMI_BACKEND_URL"].removeprefix("file://"))
        self.locks = lock_dir(backend, name)
        self.state_file = backend / "stacks" / f"{name}.json"
        self.config_file = Path.cwd() / f"Pulumi.{name}.yaml"  # JSON is YAML

    def exists(self) -> bool:
        return self.state_file.exists()

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())

    def save_state(self, state: dict[str, Any]) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state))

    def config(self) -> dict[str, str]:
        return json.loads(self.config_file.read_text()) if self.config_file.exists() else {}

    def save_config(self, config: dict[str, str]) -> None:
        self.config_file.write_text(json.dumps(config, sort_keys=True))

    def locked(self) -> bool:
        return self.locks.exists() and any(self.locks.iterdir())

    def operation(self, action: str, argv: list[str], plans: list[str]) -> int:
        if self.locked():
            print(LOCKED, file=sys.stderr)
            return 255
        if any(not Path(plan).is_file() for plan in plans):
            print(f"error: could not read the plan {plans[-1]}", file=sys.stderr)
            return 255
        self.locks.mkdir(parents=True, exist_ok=True)
        lock = self.locks / f"{uuid.uuid4()}.json"
        holder = {"pid": os.getpid(), "username": "root", "hostname": os.uname().nodename}
        lock.write_text(json.dumps({**holder, "timestamp": datetime.now(UTC).isoformat()}))
        cancelled: list[bool] = []
        if os.environ.get(STUBBORN):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGINT, lambda *_: cancelled.append(True))
        started = time.time()
        state = self.state()
        # What a CLI killed mid-operation leaves in the state.
        urn = f"urn:pulumi:{self.name}::clawhosters::hcloud:index/server:Server::{self.customer}"
        self.save_state({**state, "pending_operations": [{"resource": {"urn": urn}, "type": "creating"}]})
        marker = self.records / f"{self.customer}.{action}.{os.getpid()}.{started:.6f}.json"
        record: dict[str, Any] = {"start": started, "action": action, "customer": self.customer, "argv": argv}
        _write(marker, record)
        try:
            deadline = time.monotonic() + float(os.environ.get(SECONDS, "0.3"))
            while time.monotonic() < deadline and not cancelled:
                time.sleep(0.02)
            error = "error: update canceled" if cancelled else self._check(action)
            record.update(end=time.time(), outcome="cancelled" if cancelled else "failed" if error else "done")
            if action == "up":
                record["config"] = self.config()
            _write(marker, record)
            if not error and action == "up":
                state["outputs"] = {
                    "server_id": "4711",
                    "gateway_url": f"http://{self.customer}.example:8080/",
                    "baseline_digest": EMPTY_BASELINE,
                }
            elif not error and action == "destroy":
                state["outputs"] = {}
            history = {"kind": "update" if action == "up" else action, "result": "failed" if error else "succeeded"}
            state["history"] = [{**history, "start": started, "end": time.time()}, *state.get("history", [])]
            state["pending_operations"] = []
            self.save_state(state)
            if error:
                print(error, file=sys.stderr)
                return 255
            print(f"{_DOING[action]} ({self.name}): done")
            return 0
        finally:
            lock.unlink()

    def preview(self, flags: dict[str, list[str]]) -> int:
        if self.locked():
            print(LOCKED, file=sys.stderr)
            return 255
        error = self._check("up")
        if error:
            print(error, file=sys.stderr)
            return 255
        for plan in flags.get("--save-plan", []):
            Path(plan).write_text(json.dumps({"resourcePlans": {}}))
        _stream_summary(flags["--event-log"][0])
        return 0

    def _check(self, action: str) -> str | None:
        if self.customer.startswith("doomed"):
            return "error: the cloud said no"
        if action != "up":
            return None
        from config.loader import ConfigError, settings_from_mapping

        try:
            settings_from_mapping(self.config(), stack=self.name)
        except ConfigError as error:
            return f"error: {error}"
        return None


def _stream_summary(event_log: str) -> None:
    import grpc
    from pulumi.runtime.proto import events_pb2, events_pb2_grpc

    summary = {"sequence": 1, "timestamp": int(time.time()), "summaryEvent": {"resourceChanges": {"same": 1}}}
    with grpc.insecure_channel(event_log.removeprefix("tcp://")) as channel:
        events_pb2_grpc.EventsStub(channel).StreamEvents(iter([events_pb2.EventRequest(event=json.dumps(summary))]))


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def main(argv: list[str]) -> int:
    words: list[str] = []
    flags: dict[str, list[str]] = {}
    arguments = iter(argv)
    for argument in arguments:
        if argument in _WITH_VALUE:
            flags.setdefault(argument, []).append(next(arguments))
        elif argument.startswith("--"):
            flags.setdefault(argument, [])
        else:
            words.append(argument)
    if words == ["version"]:
        print(VERSION)
        return 0
    name = (flags.get("--stack") or words[2:3] or [""])[-1]
    stack = _Stack(name)
    if words[:2] == ["stack", "init"]:
        stack.save_state({"history": [], "outputs": {}, "pending_operations": []})
        return 0
    if not stack.exists():
        print(f"error: no stack named '{name}' found", file=sys.stderr)
        return 255
    match words[:2]:
        case ["stack", "select"]:
            pass
        case ["config"]:
            print(json.dumps({key: {"value": value, "secret": False} for key, value in stack.config().items()}))
        case ["config", "set-all"]:
            pairs = dict(pair.split("=", 1) for pair in flags.get("--plaintext", []) + flags.get("--secret", []))
            stack.save_config({**stack.config(), **pairs})  # adds and updates, never removes
        case ["config", "rm-all"]:
            stack.save_config({key: value for key, value in stack.config().items() if key not in words[2:]})
        case ["preview"]:
            return stack.preview(flags)
        case ["up"] | ["destroy"] | ["refresh"]:
            return stack.operation(words[0], argv, flags.get("--plan", []))
        case ["stack", "output"]:
            print(json.dumps(stack.state()["outputs"]))
        case ["stack", "history"]:
            history = [
                {
                    "kind": entry["kind"],
                    "startTime": _stamp(entry["start"]),
                    "endTime": _stamp(entry["end"]),
                    "message": "",
                    "environment": {},
                    "config": {},
                    "result": entry["result"],
                }
                for entry in stack.state()["history"]
            ]
            print(json.dumps(history[: int((flags.get("--page-size") or ["100"])[0])]))
        case ["stack", "export"]:
            print(json.dumps({"version": 3, "deployment": {"pending_operations": stack.state()["pending_operations"]}}))
        case ["stack", "import"]:
            # As the CLI reads it: the file --file names, else stdin.
            source = flags.get("--file")
            imported = json.loads(Path(source[0]).read_text() if source else sys.stdin.read())
            pending = imported["deployment"].get("pending_operations") or []
            stack.save_state({**stack.state(), "pending_operations": pending})
        case ["stack", "rm"]:
            if stack.locked():
                print(LOCKED, file=sys.stderr)
                return 255
            stack.state_file.unlink()
            stack.config_file.unlink(missing_ok=True)
            record = {"start": time.time(), "end": time.time(), "action": "remove", "outcome": "done"}
            _write(
                stack.records / f"{stack.customer}.remove.{time.time():.6f}.json",
                {**record, "customer": stack.customer},
            )
        case ["cancel"]:
            # As a self-managed backend's CancelCurrentUpdate: deletes whatever lock files there are,
            # and succeeds when there are none.
            held = list(stack.locks.glob("*.json")) if stack.locks.exists() else []
            for lock in held:
                lock.unlink()
            print(f"The currently running update for '{name}' has been canceled!")
        case _:
            print(f"error: unknown command {' '.join(words)}", file=sys.stderr)
            return 255
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

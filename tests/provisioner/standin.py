"""A stand-in for the pulumi CLI and the StackRunner that drives it, for the provisioner's tests.

The stand-in CLI (`bin/pulumi`, run through the provisioner's own `provisioner/bin/pulumi`) keeps
the behaviour of the real CLI that the provisioner has to live with:
- a stack lock (a file per operation, as on a self-managed backend): an operation on a locked
  stack fails with "the stack is currently locked"; a CLI killed mid-operation leaves its lock
  behind; `cancel` deletes the lock files;
- SIGINT cancels gracefully: the operation stops, the lock is released, the exit code is 255;
- `config set-all` adds and updates keys and never removes any; `config rm-all` removes;
  the stack's config file lives in the workspace directory it is run in;
- `up` validates the stack config with the program's own loader, as the program would.

It records each operation (start, end, outcome, config, arguments) as a file in CLAW_STANDIN_DIR,
takes CLAW_STANDIN_SECONDS, and fails for customers whose id starts with "doomed".
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI side starts once per command: it imports only what it uses
    from provisioner.runner import Log
    from provisioner.settings import ProvisionerSettings

REPO = Path(__file__).resolve().parents[2]

RECORDS = "CLAW_STANDIN_DIR"
SECONDS = "CLAW_STANDIN_SECONDS"
LOCKED = "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end"


class StandInRunner:
    """The StackRunner contract, carried out through the stand-in CLI as a child process."""

    def __init__(self, settings: ProvisionerSettings) -> None:
        self.settings = settings

    def _cli(self, customer_id: str, log: Log, *arguments: str) -> str:
        from provisioner.runner import CLI_ROOT, stack_name

        workspace = self.settings.state_dir / "stacks" / stack_name(customer_id)
        workspace.mkdir(parents=True, exist_ok=True)
        # Through the provisioner's own bin/pulumi, which finds this stand-in on PATH.
        path = f"{CLI_ROOT / 'bin'}:{Path(__file__).parent / 'bin'}:{os.environ['PATH']}"
        process = subprocess.run(
            [str(CLI_ROOT / "bin" / "pulumi"), *arguments, "--stack", stack_name(customer_id)],
            cwd=workspace,
            env={**os.environ, "PATH": path, "PYTHONPATH": str(REPO), "CLAW_STANDIN_PYTHON": sys.executable},
            capture_output=True,
            text=True,
            check=False,
        )
        for line in process.stdout.splitlines():
            log(line)
        if process.returncode != 0:
            raise RuntimeError((process.stderr.strip().splitlines() or [f"exit {process.returncode}"])[-1])
        return process.stdout

    def up(self, customer_id: str, config: Mapping[str, str], log: Log) -> dict[str, Any]:
        current = json.loads(self._cli(customer_id, lambda _: None, "config", "get-all"))
        stale = sorted(set(current) - set(config))
        if stale:
            self._cli(customer_id, log, "config", "rm-all", *stale)
        self._cli(customer_id, log, "config", "set-all", "--json", json.dumps(dict(config)))
        from provisioner.runner import POLICY_PACK

        output = self._cli(customer_id, log, "up", "--policy-pack", str(POLICY_PACK))
        outputs: dict[str, Any] = json.loads(output.splitlines()[-1])
        return outputs

    def destroy(self, customer_id: str, log: Log) -> None:
        self._cli(customer_id, log, "destroy")

    def remove(self, customer_id: str, log: Log) -> None:
        self._cli(customer_id, log, "stack", "rm")

    def clear_stale_lock(self, customer_id: str, log: Log) -> list[str]:
        removed = int(self._cli(customer_id, log, "cancel").splitlines()[-1])
        return ["stack lock"] if removed else []


def _write(path: Path, record: dict[str, Any]) -> None:
    # Atomically: the tests read these files while workers write them.
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


def locks(directory: Path) -> list[Path]:
    return sorted((directory / "backend" / "locks").glob("*/*.json"))


# The stand-in CLI itself.


class _Stack:
    def __init__(self, name: str) -> None:
        self.name = name
        self.records = Path(os.environ[RECORDS])
        self.locks = self.records / "backend" / "locks" / name
        self.config_file = Path.cwd() / f"Pulumi.{name}.json"

    def config(self) -> dict[str, str]:
        return json.loads(self.config_file.read_text()) if self.config_file.exists() else {}

    def save_config(self, config: dict[str, str]) -> None:
        self.config_file.write_text(json.dumps(config, sort_keys=True))

    def operation(self, action: str, argv: list[str]) -> int:
        self.locks.mkdir(parents=True, exist_ok=True)
        if any(self.locks.iterdir()):
            print(LOCKED, file=sys.stderr)
            return 255
        lock = self.locks / f"{uuid.uuid4()}.json"
        lock.write_text(json.dumps({"pid": os.getpid(), "hostname": os.uname().nodename, "at": time.time()}))
        cancelled: list[bool] = []
        signal.signal(signal.SIGINT, lambda *_: cancelled.append(True))
        customer = self.name.removeprefix("customer-")
        started = time.time()
        marker = self.records / f"{customer}.{action}.{os.getpid()}.{started:.6f}.json"
        record: dict[str, Any] = {"start": started, "action": action, "customer": customer, "argv": argv}
        _write(marker, record)
        try:
            deadline = time.monotonic() + float(os.environ.get(SECONDS, "0.3"))
            while time.monotonic() < deadline and not cancelled:
                time.sleep(0.02)
            error = "error: update canceled" if cancelled else self._check(action, customer)
            record.update(end=time.time(), outcome="cancelled" if cancelled else "failed" if error else "done")
            if action == "up":
                record["config"] = self.config()
            _write(marker, record)
            if error:
                print(error, file=sys.stderr)
                return 255
            if action == "up":
                print(json.dumps({"server_id": "4711", "gateway_url": f"http://{customer}.example:8080/"}))
            return 0
        finally:
            lock.unlink()

    def _check(self, action: str, customer: str) -> str | None:
        if customer.startswith("doomed"):
            return "the cloud said no"
        if action != "up":
            return None
        from config.customer import CustomerConfig
        from config.loader import ConfigError, settings_from_mapping

        config = self.config()
        if "decommission" not in CustomerConfig.model_fields:
            # The program's decommission setting is built separately; until it lands, validate the rest.
            config.pop("clawhosters:decommission", None)
        try:
            settings_from_mapping(config)
        except ConfigError as error:
            return f"error: {error}"
        return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pulumi (stand-in)")
    parser.add_argument("words", nargs="+")
    parser.add_argument("--stack", required=True)
    parser.add_argument("--json")
    parser.add_argument("--policy-pack", action="append", default=[])
    args = parser.parse_args(argv)
    stack = _Stack(args.stack)
    match args.words:
        case ["config", "get-all"]:
            print(json.dumps(stack.config()))
        case ["config", "set-all"]:
            stack.save_config({**stack.config(), **json.loads(args.json)})  # adds and updates, never removes
        case ["config", "rm-all", *keys]:
            stack.save_config({key: value for key, value in stack.config().items() if key not in keys})
        case ["up"] | ["destroy"]:
            return stack.operation(args.words[0], argv)
        case ["stack", "rm"]:
            if stack.locks.exists() and any(stack.locks.iterdir()):
                print(LOCKED, file=sys.stderr)
                return 255
            stack.config_file.unlink(missing_ok=True)
            _write(stack.records / f"{args.stack.removeprefix('customer-')}.remove.{time.time():.6f}.json", {
                "start": time.time(), "end": time.time(), "action": "remove", "outcome": "done",
                "customer": args.stack.removeprefix("customer-"),
            })  # fmt: skip
        case ["cancel"]:
            held = list(stack.locks.glob("*.json")) if stack.locks.exists() else []
            for lock in held:
                lock.unlink()
            print(len(held))
        case _:
            print(f"error: unknown command {' '.join(args.words)}", file=sys.stderr)
            return 255
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

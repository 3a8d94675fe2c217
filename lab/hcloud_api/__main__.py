"""`python -m lab.hcloud_api --state DIR --listen HOST:PORT --token PROJECT=TOKEN ...`: serve the emulator.

Settings may also come from a JSON file (`--config FILE`, an `EmulatorConfig`); flags given on the
command line override it. Point clients at http://HOST:PORT/v1 (HCLOUD_ENDPOINT for the provider).
With `--machines` (as root) every server is a booted Debian 12 machine on the lab's network
(lab/servers.py), which is built first when it is not up; the machines outlive the emulator
until `python -m lab down`. `--listen-in NAMESPACE` serves the same address inside a network
namespace of the lab as well (the provisioner's, where the Pulumi CLI runs), while the emulator
itself stays in the host's. `--dns-hosts-dir DIR` publishes each primary DNS zone's A and AAAA records
as a hosts file in DIR, for a resolver that reads them (dnsmasq `--hostsdir`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from lab.hcloud_api.app import create_app
from lab.hcloud_api.config import EmulatorConfig


def _token(text: str) -> dict[str, Any]:
    project, separator, token = text.partition("=")
    if not separator:
        raise argparse.ArgumentTypeError("expected PROJECT=TOKEN")
    return {"project": project, "token": token}


def _read_token(text: str) -> dict[str, Any]:
    return _token(text) | {"read_only": True}


def _listen(text: str) -> tuple[str, int]:
    host, separator, port = text.rpartition(":")
    if not separator or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host.strip("[]"), int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab.hcloud_api", description=__doc__)
    parser.add_argument("--config", type=Path, help="JSON file with the settings")
    parser.add_argument("--state", type=Path, help="state directory (created if missing)")
    parser.add_argument("--listen", type=_listen, help="HOST:PORT, default 127.0.0.1:8080")
    parser.add_argument("--token", type=_token, action="append", default=[], help="PROJECT=TOKEN, repeatable")
    parser.add_argument(
        "--read-token", type=_read_token, action="append", default=[], help="PROJECT=TOKEN allowed GET only, repeatable"
    )
    parser.add_argument("--rate-limit", type=int, help="requests per project before 429, default 3600")
    parser.add_argument("--refill-per-second", type=float, help="requests regained per second, default 1")
    parser.add_argument("--action-seconds", type=float, help="how long actions run at least, default 0.5")
    parser.add_argument("--ipv4-pool", help="IPv4 network servers' addresses come from")
    parser.add_argument("--ipv6-pool", help="IPv6 network servers' /64s come from")
    parser.add_argument("--machines", action="store_true", help="boot every server on the lab's network (root)")
    parser.add_argument(
        "--dns-hosts-dir", type=Path, help="publish each primary zone's A and AAAA records as a hosts file here"
    )
    parser.add_argument(
        "--listen-in", action="append", default=[], metavar="NAMESPACE", help="also serve inside this namespace"
    )
    return parser


def settings(argv: list[str] | None = None) -> EmulatorConfig:
    return _settings(_parser().parse_args(argv))


def _settings(args: argparse.Namespace) -> EmulatorConfig:
    values: dict[str, Any] = json.loads(args.config.read_text()) if args.config else {}
    if args.state:
        values["state_dir"] = args.state
    if args.listen:
        values["host"], values["port"] = args.listen
    if args.token or args.read_token:
        values["tokens"] = args.token + args.read_token
    limits = {"limit": args.rate_limit, "refill_per_second": args.refill_per_second}
    values["rate_limit"] = values.get("rate_limit", {}) | {k: v for k, v in limits.items() if v is not None}
    pools = {"ipv4": args.ipv4_pool, "ipv6": args.ipv6_pool}
    values["pools"] = values.get("pools", {}) | {k: v for k, v in pools.items() if v is not None}
    if args.action_seconds is not None:
        values["action_seconds"] = args.action_seconds
    if args.dns_hosts_dir is not None:
        values["dns_hosts_dir"] = args.dns_hosts_dir
    return EmulatorConfig.model_validate(values)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _settings(args)
    except (ValidationError, OSError, ValueError) as error:
        print(f"hcloud_api: {error}", file=sys.stderr)
        return 2
    if args.machines:
        return _serve_with_machines(config, args.listen_in)
    _serve(create_app(config), config, args.listen_in)
    return 0


def _serve(app: Any, config: EmulatorConfig, namespaces: list[str]) -> None:
    from lab.netns import listener

    sockets = [listener(config.host, config.port, namespace) for namespace in (None, *namespaces)]
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=sockets)


def _serve_with_machines(config: EmulatorConfig, namespaces: list[str]) -> int:
    # Imported here: the machines need the lab (its image recipe, root), the emulator alone does not.
    from lab import servers, world
    from lab.hcloud_api.backend import MachineError
    from lab.machine import MachineError as BootError

    try:
        if not servers.router_is_up():
            world.Lab().internet()
        backend = servers.ServerBackend()
        backend.start()
    except (MachineError, BootError, world.LabError) as error:
        print(f"hcloud_api: {error}", file=sys.stderr)
        return 1
    try:
        _serve(create_app(config, backend), config, namespaces)
    finally:
        backend.close()
    print("hcloud_api: the servers keep running; `python -m lab down` removes them", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""python -m provisioner serve | worker [--workers N] | status CUSTOMER | retry EVENT_ID | snapshots"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from provisioner import logs
from provisioner.settings import SettingsError
from provisioner.store import StoreUnavailable

log = logging.getLogger("provisioner")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provisioner", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="the billing webhook (public listener); status API, metrics (private listener)")
    worker = commands.add_parser("worker", help="run jobs")
    worker.add_argument("--workers", type=int, default=2, help="stack operations at once (processes)")
    status = commands.add_parser("status", help="a customer's status and job history")
    status.add_argument("customer")
    retry = commands.add_parser("retry", help="run a failed job again (only the customer's newest)")
    retry.add_argument("event_id")
    commands.add_parser(
        "snapshots",
        help="submit the day's scheduled snapshots now (platform:backups mode snapshots; workers do it hourly)",
    )
    args = parser.parse_args(argv)
    logs.setup()
    try:
        from provisioner import jobs

        settings, store = jobs.settings(), jobs.store()
        if args.command == "worker":
            # A missing or wrong token stops the worker here, naming its variable.
            settings.hetzner_read_tokens(os.environ)
            settings.hetzner_dns_token(os.environ)
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    try:
        # Before this process's first write: a store written by an earlier version gains its index.
        if store.build_index():
            log.info("built the job store's index")
        if args.command == "serve":
            from provisioner.service import make_apps, serve

            serve(settings, make_apps(settings, store, jobs.enqueue, jobs.queue_depth))
        elif args.command == "worker":
            jobs.consume(args.workers)
        elif args.command == "snapshots":
            print(json.dumps({"accepted": jobs.submit_snapshots()}))
        elif args.command == "status":
            job = store.latest(args.customer)
            if job is None:
                print(f"unknown customer {args.customer}", file=sys.stderr)
                return 1
            from provisioner.service import job_view

            print(json.dumps(job_view(job), indent=2))
        else:
            refusal = store.retry(args.event_id)
            if refusal is not None:
                print(refusal, file=sys.stderr)
                return 1
            job = store.get(args.event_id)
            if job is not None:
                jobs.enqueue(job)
            print(f"{args.event_id} queued again")
    except StoreUnavailable as error:
        print(f"the job store is unavailable: {error}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())

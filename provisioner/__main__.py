"""python -m provisioner serve | worker [--workers N] | status CUSTOMER | retry EVENT_ID"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from provisioner.settings import SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m provisioner", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="HTTP intake and status API")
    worker = commands.add_parser("worker", help="run jobs")
    worker.add_argument("--workers", type=int, default=2, help="stack operations at once (processes)")
    status = commands.add_parser("status", help="a customer's status")
    status.add_argument("customer")
    retry = commands.add_parser("retry", help="run a failed job again")
    retry.add_argument("event_id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        from provisioner import jobs

        settings, store = jobs.settings(), jobs.store()
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    if args.command == "serve":
        from provisioner.service import make_server

        server = make_server(settings, store, jobs.enqueue)
        print(f"listening on {settings.bind}", file=sys.stderr, flush=True)
        server.serve_forever()
    elif args.command == "worker":
        from huey.consumer import Consumer

        jobs.recover()
        # Separate processes: the Automation API keeps process-global state. Poll at least once a second.
        consumer = Consumer(jobs.huey, workers=args.workers, worker_type="process", periodic=True, max_delay=1.0)
        consumer.run()
    elif args.command == "status":
        job = store.latest(args.customer)
        if job is None:
            print(f"unknown customer {args.customer}", file=sys.stderr)
            return 1
        from provisioner.service import job_view

        print(json.dumps(job_view(job), indent=2))
    else:
        job = store.get(args.event_id)
        if job is None or job.state != "failed":
            print(f"{args.event_id} is not a failed job", file=sys.stderr)
            return 1
        job.state, job.attempts, job.run_after = "queued", 0, 0
        store.save(job)
        jobs.enqueue(job)
        print(f"{args.event_id} queued again")
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(main())

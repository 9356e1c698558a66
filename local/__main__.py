"""``python -m local``: start the whole system on this machine and keep it running.

Starts the embedded AWS (moto, 127.0.0.1:4566 or ``EXPEDIENTE_AWS_PORT``), provisions it from
``infra.definitions``, opens the API front door (127.0.0.1:3000 or ``EXPEDIENTE_API_PORT``),
starts the queue dispatcher (SQS event sources) and the scheduler (``EXPEDIENTE_LOCAL_SCHEDULE_SECONDS``
overrides the periods), seeds the demo tenants and writes ``.local/stack.json``. Ctrl-C or SIGTERM
stops everything and exits 0. Exit status 1 means the stack could not start (the reason is on
stderr).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from botocore.exceptions import BotoCoreError, ClientError

from local import aws, frontdoor
from local.seed import DEMO_PASSWORD, SeedError
from local.stack import LocalStack, configured_stack_file

logger = logging.getLogger("local")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__.split("\n\n")[0])
    parser.add_argument("--aws-port", type=int, default=aws.configured_port(),
                        help="embedded AWS port (env EXPEDIENTE_AWS_PORT, default 4566; 0 = any free port)")
    parser.add_argument("--api-port", type=int, default=frontdoor.configured_port(),
                        help="API port (env EXPEDIENTE_API_PORT, default 3000; 0 = any free port)")
    parser.add_argument("--region", default=aws.configured_region(),
                        help="region (env EXPEDIENTE_AWS_REGION, default us-east-1)")
    parser.add_argument("--stack-file", type=Path, default=configured_stack_file(),
                        help="where to write the stack description (env EXPEDIENTE_STACK_FILE, "
                             "default .local/stack.json at the repository root)")
    parser.add_argument("--no-seed", action="store_true", help="start without the demo tenants and users")
    parser.add_argument("--verbose", action="store_true", help="log every request (route, status, request id)")
    return parser.parse_args(argv)


def _banner(stack: LocalStack) -> str:
    assert stack.aws is not None
    lines = [
        f"Expediente local stack is up (started in {stack.startup_seconds:.1f} s)",
        f"  API           {stack.api_url}",
        f"  AWS endpoint  {stack.aws.endpoint} (region {stack.aws.region}, any credentials)",
        f"  User pool     {stack.aws.user_pool_id}, app client {stack.aws.user_pool_client_id}",
        f"  Stack file    {stack.stack_file}",
    ]
    if stack.dispatcher is not None:
        for mapping in stack.dispatcher.mappings:
            lines.append(f"  Consumer      {mapping.function_id} <- queue {mapping.queue_id} "
                         f"(batches of {mapping.batch_size})")
    if stack.scheduler is not None:
        for schedule in stack.scheduler.schedules.values():
            period = stack.scheduler.period_s(schedule)
            lines.append(f"  Schedule      {schedule.id}: {schedule.function} every {period:g} s"
                         if period > 0 else f"  Schedule      {schedule.id}: off")
    for topic in stack.aws.topics.values():
        lines.append(f"  Topic         {topic.id}: what it publishes lands in {topic.inbox_url}")
    first_user = None
    for tenant in stack.tenants:
        clinics = ", ".join(clinic.clues for clinic in tenant.clinics)
        lines.append(f"Tenant {tenant.id} (clinics {clinics}): users "
                     + ", ".join(f"{user.username}" for user in tenant.users))
        first_user = first_user or tenant.user("reception").username
    if first_user:
        lines += [
            f"Every demo user's password is {DEMO_PASSWORD} (local demo only).",
            "Get an ID token and make a first call:",
            f"  TOKEN=$(python -m local.token {first_user})",
            f'  curl -H "Authorization: Bearer $TOKEN" {stack.api_url}/fhir/Patient',
        ]
    else:
        lines.append("No demo data (--no-seed).")
    lines.append(f"  curl {stack.api_url}/fhir/metadata    # no token needed")
    lines.append("Ctrl-C stops the stack.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM; returns the process exit status."""
    options = _arguments(argv)
    frontdoor.ensure_code_paths()  # functions/, layers/common (expediente) and ops, however we were launched
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("local.frontdoor").setLevel(logging.INFO if options.verbose else logging.WARNING)
    logging.getLogger("local.dispatch").setLevel(logging.INFO if options.verbose else logging.WARNING)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    stack = LocalStack(
        aws_port=options.aws_port,
        api_port=options.api_port,
        region=options.region,
        seed=not options.no_seed,
        stack_file=options.stack_file,
    )
    try:
        stack.start()
    except OSError as error:
        logger.error("cannot start: %s (is another stack running? try --aws-port/--api-port)", error)
        return 1
    except (SeedError, ClientError, BotoCoreError) as error:
        logger.error("cannot seed the demo data: %s (use --no-seed to start without it)", error)
        return 1
    except ValueError as error:
        logger.error("cannot start: %s", error)
        return 1
    sys.stdout.write(_banner(stack))
    sys.stdout.flush()
    while not stop.wait(0.2):
        pass
    logger.info("stopping")
    stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

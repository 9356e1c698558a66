"""The whole local stack in one object: embedded AWS, front door, queue dispatcher, scheduler,
demo data, ``stack.json``.

``python -m local`` and the e2e fixtures both use ``LocalStack``::

    with LocalStack(aws_port=0, api_port=0, stack_file=tmp / "stack.json") as stack:
        requests.get(f"{stack.api_url}/fhir/metadata")
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from local import aws, frontdoor, sign_in
from local.aws import EmbeddedAws, LocalAws, provision
from local.dispatch import QueueDispatcher, Scheduler
from local.frontdoor import FrontDoor, FunctionRunner, Handler
from local.seed import SeededClinic, SeededTenant, SeededUser, seed

logger = logging.getLogger(__name__)

STACK_FILE_ENV = "EXPEDIENTE_STACK_FILE"
DEFAULT_STACK_FILE = frontdoor.REPO_ROOT / ".local" / "stack.json"


def configured_stack_file() -> Path:
    """``EXPEDIENTE_STACK_FILE`` if set, else ``<repo>/.local/stack.json``."""
    return Path(os.environ.get(STACK_FILE_ENV, DEFAULT_STACK_FILE))


class LocalStack:
    """Starts, seeds and stops everything; ``start`` returns once requests can be served.

    ``seed=False`` skips the demo data (``tenants`` stays empty). ``stack_file=None`` writes no
    file. ``handlers`` replaces ``functions.<id>.handler.lambda_handler`` for the given function
    ids, wherever the function is invoked from (front door, queue dispatcher, scheduler): tests
    use it to run a recording handler. ``schedule_seconds`` replaces every schedule's period
    (default: ``EXPEDIENTE_LOCAL_SCHEDULE_SECONDS``, else the schedule's minutes; 0 = off).
    """

    def __init__(
        self,
        *,
        aws_port: int = aws.DEFAULT_PORT,
        api_port: int = frontdoor.DEFAULT_PORT,
        region: str = aws.DEFAULT_REGION,
        seed: bool = True,
        stack_file: Path | None = DEFAULT_STACK_FILE,
        handlers: Mapping[str, Handler] | None = None,
        schedule_seconds: float | None = None,
    ) -> None:
        self._api_port = api_port
        self._region = region
        self._seed = seed
        self._handlers = dict(handlers or {})
        self._schedule_seconds = schedule_seconds
        self.stack_file = stack_file
        self._embedded = EmbeddedAws(port=aws_port)
        self._front_door: FrontDoor | None = None
        self.dispatcher: QueueDispatcher | None = None
        self.scheduler: Scheduler | None = None
        self.aws: LocalAws | None = None
        self._undo_sign_in: Callable[[], None] | None = None
        self._runner: FunctionRunner | None = None
        self.api_url = ""
        self.tenants: list[SeededTenant] = []
        self.startup_seconds = 0.0

    def start(self) -> LocalStack:
        """Start AWS, provision, open the front door, start the dispatcher and scheduler, seed, write
        the stack file.

        On any failure, stops what already started and re-raises (OSError for a busy port,
        SeedError or botocore's ClientError for a refused step, ValueError for a malformed
        ``EXPEDIENTE_LOCAL_SCHEDULE_SECONDS``).
        """
        started = time.monotonic()
        try:
            endpoint = self._embedded.start()
            self.aws = provision(endpoint, self._region)
            # One runner for every caller: one handler cache, one environment lock.
            runner = self._runner = FunctionRunner(self.aws, handlers=self._handlers)
            # The user pool's sign-in triggers and its failed sign-ins (decision 0029), which moto lacks.
            self._undo_sign_in = sign_in.install(runner, self.aws)
            self._front_door = FrontDoor(self.aws, runner=runner)
            self.api_url = self._front_door.start(port=self._api_port)
            self.dispatcher = QueueDispatcher(self.aws, runner)
            self.dispatcher.start()
            self.scheduler = Scheduler(self.aws, runner, period_s=self._schedule_seconds)
            self.scheduler.start()
            if self._seed:
                self.seed_demo_data()
            elif self.stack_file is not None:
                write_stack_file(self.stack_file, self.document())
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        logger.info("local stack ready in %.1f s", self.startup_seconds)
        return self

    def seed_demo_data(self) -> list[SeededTenant]:
        """Create the demo tenants (``local.seed``) and rewrite the stack file with them.

        Raises SeedError or botocore's ClientError if a step is refused; the stack keeps running.
        """
        if self.aws is None:
            raise RuntimeError("the local stack is not running")
        self.tenants = seed(self.aws, self.api_url)
        if self.stack_file is not None:
            write_stack_file(self.stack_file, self.document())
        return self.tenants

    def stop(self) -> None:
        """Stop the scheduler, the dispatcher, the front door, then the embedded AWS; safe to call twice.

        A handler that is running finishes first (the scheduler and dispatcher wait for it).
        """
        for service in (self.scheduler, self.dispatcher):
            if service is not None:
                service.stop()
        self.scheduler = self.dispatcher = None
        if self._front_door is not None:
            self._front_door.stop()
            self._front_door = None
        if self._runner is not None:
            self._runner.close()
            self._runner = None
        self._embedded.stop()
        if self._undo_sign_in is not None:
            self._undo_sign_in()
            self._undo_sign_in = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def document(self) -> dict[str, Any]:
        """What ``.local/stack.json`` holds (raises RuntimeError before ``start``)."""
        if self.aws is None:
            raise RuntimeError("the local stack is not running")
        return stack_document(self.aws, self.api_url, self.tenants)


def stack_document(local_aws: LocalAws, api_url: str, tenants: list[SeededTenant]) -> dict[str, Any]:
    """The client's view of the stack: the API URL, the embedded AWS (endpoint, region, pool and
    client ids, tables, buckets, queues, bus, key: what ``ops.tenants.StackInfo.from_stack_json``
    and ``LocalAws.from_document`` read) and the demo tenants with their clinics and users."""
    return {
        "api_url": api_url,
        **local_aws.to_document(),
        "tenants": [
            {
                "id": tenant.id,
                "name": tenant.name,
                "organization_id": tenant.organization_id,
                "clinics": [{"id": c.id, "clues": c.clues, "name": c.name} for c in tenant.clinics],
                "users": [
                    {
                        "username": u.username,
                        "password": u.password,
                        "role": u.role,
                        **({"practitioner_id": u.practitioner_id} if u.practitioner_id else {}),
                        **({"patient_id": u.patient_id} if u.patient_id else {}),
                    }
                    for u in tenant.users
                ],
                "patient_ids": list(tenant.patient_ids),
            }
            for tenant in tenants
        ],
    }


def tenants_from_document(document: dict[str, Any]) -> list[SeededTenant]:
    """The demo tenants a stack file lists (the inverse of ``stack_document``'s ``tenants``)."""
    return [
        SeededTenant(
            id=tenant["id"],
            name=tenant["name"],
            organization_id=tenant["organization_id"],
            clinics=tuple(SeededClinic(**clinic) for clinic in tenant["clinics"]),
            users=tuple(SeededUser(**user) for user in tenant["users"]),
            patient_ids=tuple(tenant.get("patient_ids", ())),
        )
        for tenant in document["tenants"]
    ]


def write_stack_file(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` as JSON to ``path`` atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    partial.replace(path)


def read_stack_file(path: Path | None = None) -> dict[str, Any]:
    """The stack file at ``path`` (default: ``configured_stack_file()``); FileNotFoundError if absent."""
    document: dict[str, Any] = json.loads((path or configured_stack_file()).read_text(encoding="utf-8"))
    return document

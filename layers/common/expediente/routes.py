"""The FHIR routes every clinical domain answers the same way: read, vread, history, search.

A domain function builds one :class:`ClinicalRoutes` over its resolver and repository and calls it
from its thin route functions; what differs per domain (how a resource is shown to a role, which
``_include``s it supports) comes in as arguments. Every read writes its audit record (with the
patients it touched) before the data leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from expediente import audit, records
from expediente.api import base_url, fhir_response, header, query_params, request_context
from expediente.audit import Action, AuditEntry
from expediente.clinical import ClinicalRepository, SearchSpec, plan_search
from expediente.context import RequestContext, valid_resource_id
from expediente.errors import Invalid, MethodNotAllowed, NotFound, PreconditionRequired
from expediente.fhir import history_bundle, page_size, parse_if_match, query_fingerprint, searchset
from expediente.permissions import Interaction
from expediente.store import Stored

Present = Callable[[RequestContext, Stored], dict[str, Any]]
# (caller, repository, matches, the _include/_revinclude values asked) -> the resources to include
Include = Callable[[RequestContext, ClinicalRepository, list[Stored], set[str]], list[Stored]]


def patients_of(stored: list[Stored]) -> tuple[str, ...]:
    """The patients whose data ``stored`` holds (for the audit record)."""
    found = (records.subject_of(s.resource) or s.attrs.get("patient") for s in stored)
    return tuple(dict.fromkeys(p for p in found if p))


class ClinicalRoutes:
    """Shared route bodies over one function's resolver and repository."""

    def __init__(
        self,
        app: APIGatewayRestResolver,
        repository: Callable[[], ClinicalRepository],
        *,
        searches: Mapping[str, SearchSpec],
        includes: Mapping[str, Mapping[str, frozenset[str]]] | None = None,
        include: Include | None = None,
        present: Present | None = None,
    ) -> None:
        self.app = app
        self.repository = repository
        self.searches = searches
        self.includes = includes or {}
        self._include = include
        self._present = present or (lambda ctx, stored: stored.resource)

    # -- small pieces -------------------------------------------------------------------

    @staticmethod
    def id(resource_type: str, value: str) -> str:
        """A resource id from the path; anything that cannot be an id is simply not found."""
        if not valid_resource_id(value):
            raise NotFound(f"{resource_type}/{value} not found")
        return value

    def if_match(self) -> int:
        """The version an update names (``If-Match``); 428 without it."""
        value = parse_if_match(header(self.app, "if-match"))
        if value is None:
            raise PreconditionRequired('This change needs If-Match with the version read (ETag, e.g. W/"1")',
                                       expression="If-Match")
        return value

    def present(self, ctx: RequestContext, stored: Stored) -> dict[str, Any]:
        return self._present(ctx, stored)

    def created(self, resource: dict[str, Any], version: int) -> Response[str]:
        location = f"{base_url(self.app)}/fhir/{resource['resourceType']}/{resource['id']}/_history/{version}"
        return fhir_response(resource, status=201, version=version, location=location,
                             last_modified=resource["meta"]["lastUpdated"])

    @staticmethod
    def saved(resource: dict[str, Any], version: int) -> Response[str]:
        return fhir_response(resource, version=version, last_modified=resource["meta"]["lastUpdated"])

    @staticmethod
    def replayed(ctx: RequestContext, resource_type: str) -> Callable[[Response[str]], None]:
        """Audit a create answered from the idempotency record (nothing written again)."""

        def replayed(response: Response[str]) -> None:
            location = str(response.headers.get("Location", ""))
            resource_id = location.split(f"/{resource_type}/")[-1].split("/")[0] if location else None
            audit.record(ctx, AuditEntry(resource_type, Action.CREATE, resource_id or None, (),
                                         response.status_code, detail={"idempotent": "replayed"}))

        return replayed

    def refuse_delete(self, resource_type: str, advice: str) -> Response[str]:
        request_context(self.app)  # still 401 for an anonymous caller
        raise MethodNotAllowed(f"{resource_type} resources are never deleted (NOM-004-SSA3 5.11). {advice}",
                               headers={"Allow": "GET, PUT, POST"})

    # -- reads ----------------------------------------------------------------------------

    def _response(self, ctx: RequestContext, stored: Stored) -> Response[str]:
        return fhir_response(self.present(ctx, stored), version=stored.version, last_modified=stored.last_updated)

    def read(self, resource_type: str, resource_id: str) -> Response[str]:
        ctx = request_context(self.app)
        ctx.require(resource_type, Interaction.READ)
        stored = self.repository().require(ctx, resource_type, self.id(resource_type, resource_id))
        audit.record(ctx, AuditEntry(resource_type, Action.READ, resource_id, patients_of([stored]), 200))
        return self._response(ctx, stored)

    def vread(self, resource_type: str, resource_id: str, version: str) -> Response[str]:
        ctx = request_context(self.app)
        ctx.require(resource_type, Interaction.VREAD)
        resource_id = self.id(resource_type, resource_id)
        stored = (self.repository().get_version(ctx, resource_type, resource_id, int(version))
                  if version.isdigit() else None)
        if stored is None:
            raise NotFound(f"{resource_type}/{resource_id}/_history/{version} not found")
        audit.record(ctx, AuditEntry(resource_type, Action.VREAD, resource_id, patients_of([stored]), 200,
                                     detail={"version": version}))
        return self._response(ctx, stored)

    def history(self, resource_type: str, resource_id: str) -> Response[str]:
        ctx = request_context(self.app)
        ctx.require(resource_type, Interaction.HISTORY)
        repo = self.repository()
        current = repo.require(ctx, resource_type, self.id(resource_type, resource_id))
        params = query_params(self.app)
        unknown = sorted(set(params) - {"_count", "_page"})
        if unknown:
            raise Invalid(f"Unsupported _history parameter(s): {', '.join(unknown)}", expression=unknown[0])
        versions, next_token = repo.history(ctx, resource_type, resource_id, limit=page_size(params),
                                            page=params.get("_page"))
        audit.record(ctx, AuditEntry(resource_type, Action.HISTORY, resource_id, patients_of([current]), 200))
        bundle = history_bundle(base_url=base_url(self.app), path=f"/fhir/{resource_type}/{resource_id}/_history",
                                versions=[self.present(ctx, v) for v in versions], next_token=next_token,
                                total=current.version)
        return fhir_response(bundle)

    def register_reads(self, resource_type: str) -> None:
        """Route ``GET /fhir/<type>/<id>``, ``…/_history`` and ``…/_history/<version>`` to :meth:`read`,
        :meth:`history` and :meth:`vread` (register them after any ``/fhir/<type>/$operation`` GET, so
        the operation's literal path is matched first)."""
        base = f"/fhir/{resource_type}/<resource_id>"
        self.app.get(base)(lambda resource_id: self.read(resource_type, resource_id))
        self.app.get(f"{base}/_history")(lambda resource_id: self.history(resource_type, resource_id))
        self.app.get(f"{base}/_history/<version>")(
            lambda resource_id, version: self.vread(resource_type, resource_id, version))

    def search(self, resource_type: str, params: Mapping[str, str] | None = None) -> Response[str]:
        """One page of a search: one index Query, one batch read, then ``_include``s; all audited.

        ``params`` replaces the query's parameters for planning (a domain may rewrite them, e.g. a
        worklist); the Bundle's links keep the parameters the client sent.
        """
        ctx = request_context(self.app)
        ctx.require(resource_type, Interaction.SEARCH)
        sent = query_params(self.app)
        params = dict(sent if params is None else params)
        repo = self.repository()
        plan = plan_search(ctx, self.searches[resource_type], params)
        wanted = self._includes(resource_type, params)
        found: list[Stored] = []
        next_token = None
        if not plan.empty:
            found, page = repo.search(ctx, resource_type, plan.facet, plan.value, limit=page_size(params),
                                      token=params.get("_page"), fingerprint=query_fingerprint(params),
                                      low=plan.low, high=plan.high, keep=plan.keep)
            found = [s for s in found if plan.matches(s.resource)]
            next_token = page.next_token
        included = self._include(ctx, repo, found, wanted) if wanted and self._include else []
        audit.record(ctx, AuditEntry(resource_type, Action.SEARCH, None, patients_of(found + included), 200,
                                     query_params=tuple(sorted(params))))
        total = len(found) if next_token is None and not params.get("_page") else None
        bundle = searchset(base_url=base_url(self.app), path=f"/fhir/{resource_type}", params=sent,
                           resources=[self.present(ctx, s) for s in found], next_token=next_token, total=total,
                           included=[self.present(ctx, s) for s in included])
        return fhir_response(bundle)

    def _includes(self, resource_type: str, params: Mapping[str, str]) -> set[str]:
        """The ``_include``/``_revinclude`` values asked; 400 for one this type does not support."""
        supported = self.includes.get(resource_type, {})
        wanted: set[str] = set()
        for kind in ("_include", "_revinclude"):
            for value in (params.get(kind) or "").split(","):
                if not value:
                    continue
                if value not in supported.get(kind, frozenset()):
                    options = ", ".join(sorted(supported.get(kind, frozenset()))) or "none"
                    raise Invalid(f"{kind}={value} is not supported for {resource_type} (supported: {options})",
                                  expression=kind)
                wanted.add(value)
        return wanted

"""API Gateway resource routing, built from ``infra.definitions.FUNCTIONS``.

The deployed REST API declares one resource per route of each function (``ANY`` method) and
the public routes with ``GET`` and no authorizer. This module reproduces how API Gateway picks a
resource for a request path, so the local front door routes exactly as the deployed API does:

- ``/fhir/Patient`` matches only that path (a trailing slash is ignored, as API Gateway does);
- ``{name}`` matches one non-empty path segment, ``{name+}`` one or more segments;
- when several resources match, the most specific wins: more literal segments first, then
  single-segment variables before a greedy ``{proxy+}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from infra.definitions import FUNCTIONS, FunctionDef

_VARIABLE = re.compile(r"^\{(?P<name>[A-Za-z0-9_]+)(?P<greedy>\+)?\}$")


@dataclass(frozen=True)
class Route:
    """One API Gateway resource owned by a function.

    ``public`` routes accept ``GET`` without a token; every other route accepts any method and
    requires a valid Cognito ID token.
    """

    function_id: str
    resource: str
    public: bool
    pattern: re.Pattern[str]
    specificity: tuple[int, int, int]

    @classmethod
    def build(cls, function_id: str, resource: str, *, public: bool) -> Route:
        """Compile an API Gateway resource path (raises ValueError if it is not one)."""
        if not resource.startswith("/"):
            raise ValueError(f"API Gateway resource paths start with '/': {resource!r}")
        parts: list[str] = []
        literals = variables = greedy = 0
        segments = resource.strip("/").split("/") if resource != "/" else []
        for position, segment in enumerate(segments):
            variable = _VARIABLE.match(segment)
            if variable is None:
                if "{" in segment or "}" in segment:
                    raise ValueError(f"unsupported resource segment {segment!r} in {resource!r}")
                parts.append(re.escape(segment))
                literals += 1
            elif variable["greedy"]:
                if position != len(segments) - 1:
                    raise ValueError(f"a greedy variable must be the last segment: {resource!r}")
                parts.append(f"(?P<{variable['name']}>.+)")
                greedy += 1
            else:
                parts.append(f"(?P<{variable['name']}>[^/]+)")
                variables += 1
        pattern = re.compile("^/" + "/".join(parts) + "$")
        return cls(function_id, resource, public, pattern, (literals, variables, -greedy))

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters if ``path`` is this resource, else None."""
        found = self.pattern.match(path)
        return None if found is None else found.groupdict()


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    path_parameters: dict[str, str]


class RouteTable:
    """Every route of every function; ``resolve`` picks the resource API Gateway would pick."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        seen: dict[str, str] = {}
        for route in self.routes:
            owner = seen.setdefault(route.resource, route.function_id)
            if owner != route.function_id:
                raise ValueError(f"{route.resource} is declared by both {owner} and {route.function_id}")

    @classmethod
    def from_definitions(cls, functions: Iterable[FunctionDef] = FUNCTIONS) -> RouteTable:
        """The routing table of the deployed API, from the function definitions."""
        return cls(
            [Route.build(fn.id, resource, public=False) for fn in functions for resource in fn.routes]
            + [Route.build(fn.id, resource, public=True) for fn in functions for resource in fn.public_routes]
        )

    def resolve(self, path: str) -> RouteMatch | None:
        """The most specific route for ``path`` (a decoded URL path), or None."""
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        best: RouteMatch | None = None
        for route in self.routes:
            parameters = route.match(path)
            if parameters is None:
                continue
            if best is None or route.specificity > best.route.specificity:
                best = RouteMatch(route, parameters)
        return best

    def by_function(self) -> dict[str, dict[str, list[str]]]:
        """``{function_id: {"authorized": [...], "public": [...]}}`` with sorted resource paths."""
        described: dict[str, dict[str, list[str]]] = {}
        for route in self.routes:
            entry = described.setdefault(route.function_id, {"authorized": [], "public": []})
            entry["public" if route.public else "authorized"].append(route.resource)
        for entry in described.values():
            entry["authorized"].sort()
            entry["public"].sort()
        return described

"""Every route of the app's OpenAPI document reaches the service that owns it, through the Kubernetes
HTTPRoutes (with the Gateway API's precedence) and through the compose proxy (nginx's map), by exactly one
rule; /metrics is reachable through neither."""

from __future__ import annotations

import re
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from litestar.exceptions import LitestarDeprecationWarning
from triggers_common.settings import Settings

from triggers.server import TARGETS, create_app

from .conftest import ROOT

FRONT_DOOR = "ingest"
"""Routes that every target serves (health, docs) are answered by this one through the Gateway."""
UNROUTED = {"/metrics"}
"""Scraped from each pod, never published through the Gateway or the proxy."""
SAMPLE_PARAMS = {"key_id": "key_0123456789abcdef"}
SAMPLE_ID = "0190a6f0-7c3b-7000-8000-00000000abcd"
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


@cache
def owners() -> dict[tuple[str, str], set[str]]:
    """(METHOD, OpenAPI path) -> the targets whose app serves it, from each target's own app."""
    settings = Settings(secret_key="routing-test")
    served: dict[tuple[str, str], set[str]] = {}
    for target in TARGETS:
        with warnings.catch_warnings():
            # Litestar's notice about the inferred path-parameter style is about the handlers, not the routing.
            warnings.simplefilter("ignore", LitestarDeprecationWarning)
            schema = create_app(target, settings).openapi_schema.to_schema()
        for path, operations in schema["paths"].items():
            for method in operations.keys() & HTTP_METHODS:
                served.setdefault((method.upper(), path), set()).add(target)
    return served


def expected_owner(method: str, path: str) -> str | None:
    if path in UNROUTED:
        return None
    targets = owners()[(method, path)]
    if targets == set(TARGETS):
        return FRONT_DOOR
    assert len(targets) == 1, f"{method} {path} is served by {sorted(targets)}"
    return next(iter(targets))


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMS.get(m.group(1), SAMPLE_ID), path)


def routes_table() -> list[tuple[str, str]]:
    return sorted(owners())


def _prefix_matches(prefix: str, path: str) -> bool:
    # Gateway API PathPrefix: element-wise, a trailing slash in the prefix is ignored.
    prefix = prefix.rstrip("/")
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


def gateway_rules(httproutes: list[dict[str, Any]], method: str, path: str) -> list[tuple[tuple[int, ...], str]]:
    """The rules whose matches take the request, with their precedence and backend (highest first)."""
    found: dict[tuple[str, int], tuple[tuple[int, ...], str]] = {}
    for route in httproutes:
        for index, rule in enumerate(route["spec"]["rules"]):
            backends = {ref["name"].removeprefix("triggers-") for ref in rule["backendRefs"]}
            assert len(backends) == 1, f"{route['metadata']['name']} rule {index} splits traffic: {backends}"
            for match in rule.get("matches", [{"path": {"type": "PathPrefix", "value": "/"}}]):
                kind, value = match["path"]["type"], match["path"]["value"]
                if kind == "Exact":
                    taken, key = path == value, (1, len(value))
                elif kind == "PathPrefix":
                    taken, key = _prefix_matches(value, path), (0, len(value.rstrip("/")))
                else:
                    raise AssertionError(f"{kind} matches are not portable")
                if "method" in match and match["method"] != method:
                    taken = False
                precedence = (*key, "method" in match, len(match.get("headers", [])), len(match.get("queryParams", [])))
                slot = (route["metadata"]["name"], index)
                if taken and (slot not in found or found[slot][0] < precedence):
                    found[slot] = (precedence, next(iter(backends)))
    return sorted(found.values(), reverse=True)


def gateway_backend(httproutes: list[dict[str, Any]], method: str, path: str) -> str | None:
    rules = gateway_rules(httproutes, method, path)
    if not rules:
        return None
    best = [rule for rule in rules if rule[0] == rules[0][0]]
    assert len(best) == 1, f"{method} {path} is taken by {len(best)} rules of equal precedence: {best}"
    return best[0][1]


def nginx_table(conf: Path) -> tuple[str, list[tuple[re.Pattern[str], str]]]:
    """The default and the regular expressions of the proxy's ``map "$request_method $uri"``, in order."""
    block = re.search(r'map "\$request_method \$uri" \$triggers_service \{(.*?)\n\s*\}', conf.read_text(), re.S)
    assert block, "deploy/proxy/nginx.conf has no routing map"
    default, table = "", []
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, value = re.fullmatch(r'("[^"]*"|\S+)\s+(\S+);', line).groups()  # type: ignore[union-attr]
        key = key.strip('"')
        if key == "default":
            default = value
        else:
            assert key.startswith("~"), f"only regular expressions are used in the map: {key}"
            table.append((re.compile(key[2:], re.I) if key.startswith("~*") else re.compile(key[1:]), value))
    return default, table


def nginx_backend(method: str, path: str) -> str | None:
    default, table = nginx_table(ROOT / "deploy" / "proxy" / "nginx.conf")
    service = next((value for pattern, value in table if pattern.search(f"{method} {path}")), default)
    return None if service == "none" else service


@pytest.fixture(scope="module")
def httproutes(rendered: dict[str, tuple[str, list[dict[str, Any]]]]) -> dict[str, list[dict[str, Any]]]:
    return {
        overlay: [obj for obj in objects if obj["kind"] == "HTTPRoute"] for overlay, (_, objects) in rendered.items()
    }


def test_the_openapi_document_lists_every_service() -> None:
    served = {target for targets in owners().values() for target in targets}
    assert served == set(TARGETS)
    assert ("POST", "/v1/events") in owners()
    assert ("DELETE", "/v1/events/bulk") in owners()


@pytest.mark.parametrize(("method", "path"), routes_table())
def test_gateway_routes_each_route_to_its_owner(
    httproutes: dict[str, list[dict[str, Any]]], method: str, path: str
) -> None:
    for overlay, routes in httproutes.items():
        assert gateway_backend(routes, method, concrete(path)) == expected_owner(method, path), overlay


@pytest.mark.parametrize(("method", "path"), routes_table())
def test_compose_proxy_routes_each_route_to_its_owner(method: str, path: str) -> None:
    assert nginx_backend(method, concrete(path)) == expected_owner(method, path)


@pytest.mark.parametrize(
    ("method", "path", "owner"),
    [
        ("POST", "/v1/events/bulk", "ingest"),
        ("DELETE", "/v1/events/bulk", "inbox"),
        ("POST", "/v1/events/bulk/ack", "inbox"),
        ("GET", "/v1/events/bulk", "inbox"),  # an event id that is not a UUID: the inbox answers 422
        ("OPTIONS", "/v1/events/bulk", "ingest"),  # a CORS preflight
        ("GET", "/v1/events", "ingest"),  # 405 with Allow: POST
        ("GET", "/v1/eventsx", "ingest"),  # not a prefix of /v1/events: 404 from the front door
        ("GET", "/v1/webhooks-old", None),
        ("GET", "/metrics", None),
    ],
)
def test_edges_of_the_routing_table(
    httproutes: dict[str, list[dict[str, Any]]], method: str, path: str, owner: str | None
) -> None:
    # The Gateway answers 404 itself where no rule matches; the proxy sends unknown paths to the front door.
    for routes in httproutes.values():
        assert gateway_backend(routes, method, path) == (None if path in {"/v1/eventsx", "/v1/webhooks-old"} else owner)
    assert nginx_backend(method, path) == (owner or (None if path in UNROUTED else FRONT_DOOR))


def test_every_backend_is_a_service_of_the_overlay(rendered: dict[str, tuple[str, list[dict[str, Any]]]]) -> None:
    for overlay, (_, objects) in rendered.items():
        services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
        for route in (o for o in objects if o["kind"] == "HTTPRoute"):
            for rule in route["spec"]["rules"]:
                for ref in rule["backendRefs"]:
                    ports = {p["port"] for p in services[ref["name"]]["spec"]["ports"]}
                    assert ref["port"] in ports, f"{overlay}: {ref}"

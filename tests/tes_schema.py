"""Validate TES answers against the official v1.1 OpenAPI schema (the copy in
deployments/http_api/tes/), offline: its one remote reference (GA4GH service-info) resolves to
the copy beside it.

Beyond the schema (which allows unknown properties), a property the spec does not name is
refused, as py-tes does.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import yaml
from openapi_schema_validator import OAS30ReadValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from tests.conftest import ROOT

SPEC_DIR = ROOT / "deployments" / "http_api" / "tes"
SERVICE_INFO_URL = "https://raw.githubusercontent.com/ga4gh-discovery/ga4gh-service-info/v1.0.0/service-info.yaml"
TES_URL = "urn:ga4gh:tes:v1.1"
PREFIX = "/ga4gh/tes/v1"


def _strict(node: Any, inside_all_of: bool = False) -> Any:
    """Every object schema with `properties` (outside an allOf) refuses other properties."""
    if isinstance(node, dict):
        out = {k: _strict(v, inside_all_of or k == "allOf") for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out and not inside_all_of:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v, inside_all_of) for v in node]
    return node


@cache
def spec() -> dict[str, Any]:
    return yaml.safe_load((SPEC_DIR / "task_execution_service.openapi.yaml").read_text())


@cache
def _registry(answers: bool = True) -> Registry:
    tes = _strict(copy.deepcopy(spec()))
    if answers:
        # The spec's own view rule: a MINIMAL task is only `id` and `state`, so an answer's task
        # may lack `executors`, which a request's must have.
        tes["components"]["schemas"]["tesTask"].pop("required")
    info = yaml.safe_load((SPEC_DIR / "service-info.yaml").read_text())
    return Registry().with_resources(
        [(TES_URL, Resource.from_contents(tes, DRAFT4)), (SERVICE_INFO_URL, Resource.from_contents(info, DRAFT4))]
    )


def response_schema(path: str, method: str) -> dict[str, Any]:
    """The 200 answer's schema of a TES operation (``path`` as the spec writes it)."""
    op = spec()["paths"][path][method.lower()]
    return op["responses"][200]["content"]["application/json"]["schema"]


def validate_answer(path: str, method: str, answer: Any) -> None:
    """Raise `jsonschema.ValidationError` if ``answer`` is not what the spec says."""
    ref = response_schema(path, method).get("$ref")
    schema = {"$ref": f"{TES_URL}{ref}"} if ref else response_schema(path, method)
    OAS30ReadValidator(schema, registry=_registry()).validate(answer)


def validate_task(task: dict[str, Any]) -> None:
    """One tesTask (a request body as a client sends it)."""
    OAS30ReadValidator({"$ref": f"{TES_URL}#/components/schemas/tesTask"}, registry=_registry(answers=False)).validate(task)


def spec_path(url_path: str) -> str:
    """The spec's path of a request path: /ga4gh/tes/v1/tasks/abc:cancel -> /tasks/{id}:cancel."""
    rest = url_path.split("?", 1)[0].removeprefix(PREFIX)
    if rest.startswith("/tasks/"):
        return "/tasks/{id}:cancel" if rest.endswith(":cancel") else "/tasks/{id}"
    return rest

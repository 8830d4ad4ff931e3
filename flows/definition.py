"""What a job runs travels with its deployment.

`jobcloud deploy` (and `prefect deploy` with the generated prefect.yaml) writes each
entrypoint's whole definition - image, command, env allow-list, files, hardware, timeout - into
its deployment, as the job variable `env.JOBCLOUD_ENTRYPOINT` (JSON). Every worker type puts a
deployment's `env` into the flow run's environment, so the flow run - a process on a worker host,
or a pod or task a cloud worker started - builds its flow from that, and needs the job store's
settings and nothing else: no catalog file, and no two hosts running different commands under
one deployment. A changed catalog takes effect by deploying again.

A flow run with no such variable (`jobcloud run --local`, or a deployment made by an earlier
release) reads the catalog file, as before. The manifest records which of the two ran, and the
definition's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel, ValidationError

from jobcloud.blocks.errors import CatalogError
from jobcloud.blocks.settings import env_name, get_settings
from jobcloud.flows.catalog import Entrypoint, EntrypointRef

DEFINITION_ENV = env_name("entrypoint")


class Definition(BaseModel):
    """Where a job's entrypoint came from, and its fingerprint."""

    source: str  # "deployment" | "catalog"
    sha256: str


def entry_data(entry: Entrypoint) -> dict[str, Any]:
    """The entrypoint as plain JSON data, in the catalog's own field names."""
    return entry.model_dump(mode="json", by_alias=True, exclude_none=True)


def definition_sha256(entry: Entrypoint) -> str:
    """SHA-256 of the entrypoint's canonical JSON: equal definitions, equal fingerprints."""
    text = json.dumps(entry_data(entry), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def encode_definition(ref: EntrypointRef, entry: Entrypoint) -> str:
    """The value of `JOBCLOUD_ENTRYPOINT` for a deployment of ``ref``."""
    return json.dumps({"ref": str(ref), "entry": entry_data(entry)}, sort_keys=True, separators=(",", ":"))


# The environment of the flow run a worker is handling right now (its job template's), for
# code in the worker's own process that builds that run's flow: Prefect's process worker loads
# the flow to look for on_cancellation hooks, and the worker host has no catalog file.
_run_environment: ContextVar[Mapping[str, str] | None] = ContextVar("jobcloud_run_environment", default=None)


@contextmanager
def run_environment(environ: Mapping[str, str]) -> Iterator[None]:
    """Within this block (and tasks started in it) `deployed_entry` reads ``environ``."""
    token = _run_environment.set(environ)
    try:
        yield
    finally:
        _run_environment.reset(token)


def deployed_entry(ref: EntrypointRef, environ: Mapping[str, str] | None = None) -> Entrypoint | None:
    """The definition of ``ref`` that this flow run's deployment carries, if it carries one."""
    environ = environ if environ is not None else _run_environment.get()
    text = get_settings().entrypoint if environ is None else environ.get(DEFINITION_ENV)
    if not text:
        return None
    try:
        doc = json.loads(text)
        if doc.get("ref") != str(ref):
            return None  # a variable meant for another entrypoint (set by hand): not ours
        return Entrypoint.model_validate(doc["entry"])
    except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise CatalogError(
            [f"{DEFINITION_ENV} is not a valid definition of {ref} ({exc}); deploy again with `jobcloud deploy`"],
            path="this run's deployment",
        ) from None


def definition_of(ref: EntrypointRef, entry: Entrypoint, environ: Mapping[str, str] | None = None) -> Definition:
    """Whether ``entry`` is the deployment's definition of ``ref`` or the catalog file's."""
    deployed = deployed_entry(ref, environ)
    sha = definition_sha256(entry)
    source = "deployment" if deployed is not None and definition_sha256(deployed) == sha else "catalog"
    return Definition(source=source, sha256=sha)

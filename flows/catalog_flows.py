"""One Prefect flow per catalog entrypoint, importable by deployments and workers.

A deployment's entrypoint is the module path `jobcloud.flows.catalog_flows.<app>/<version>/<entrypoint>`
(dots in names written as `%2E`). Prefect imports `jobcloud.flows.catalog_flows` and asks it for that
attribute; the module's `__getattr__` reads the catalog (`JOBCLOUD_CONFIG`) at that moment and
builds the flow with `jobcloud.flows.job.make_flow`. So a worker needs no generated code. The entrypoint's
definition is the one its deployment carries (`jobcloud.flows.definition`: env `JOBCLOUD_ENTRYPOINT`,
written by `jobcloud deploy`); only a run without one reads the catalog file (`JOBCLOUD_CONFIG`)
as it is when the run starts.

A module path (no ':') is used on purpose: with `file.py:name` entrypoints and no pull steps,
Prefect copies the deployment's `path` into the run's working folder first; a module path
imports the installed package instead, whatever folder the worker runs in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote

from jobcloud.blocks.errors import UserError
from jobcloud.flows.catalog import Catalog, EntrypointRef, load_catalog
from jobcloud.flows.definition import deployed_entry

# jobcloud.flows.job (Prefect, seconds) is imported only when a flow is built: deploy code reads the
# catalog names without it.

if TYPE_CHECKING:
    from prefect import Flow

MODULE = "jobcloud.flows.catalog_flows"


def attribute_name(ref: EntrypointRef) -> str:
    """The attribute of this module that is the flow of ``ref`` (no dots: Prefect splits on them)."""
    return str(ref).replace("%", "%25").replace(".", "%2E")


def entrypoint_of(ref: EntrypointRef) -> str:
    """The deployment entrypoint of ``ref``, e.g. `jobcloud.flows.catalog_flows.linefit/v1/train`."""
    return f"{MODULE}.{attribute_name(ref)}"


def ref_of_attribute(name: str) -> EntrypointRef:
    """Inverse of `attribute_name`; raises `UnknownEntrypointError` for anything else."""
    return EntrypointRef.parse(unquote(name))


def flow_for(ref: EntrypointRef, catalog: Catalog | None = None) -> Flow:
    """The job flow of one entrypoint of ``catalog`` (default: the catalog file now)."""
    from jobcloud.flows.job import make_flow

    catalog = catalog if catalog is not None else load_catalog()
    return make_flow(ref, catalog.get(ref))


def __getattr__(name: str) -> Flow:
    # Dunder lookups (pickle, inspect, hasattr probes) are not entrypoints.
    if name.startswith("__") or "/" not in name:
        raise AttributeError(name)
    try:
        ref = ref_of_attribute(name)
        deployed = deployed_entry(ref)
        if deployed is not None:
            from jobcloud.flows.job import make_flow

            return make_flow(ref, deployed)
        return flow_for(ref)
    except UserError as exc:
        # Prefect turns an AttributeError into "flow not found"; keep our reason attached.
        raise AttributeError(f"{name}: {exc}") from exc

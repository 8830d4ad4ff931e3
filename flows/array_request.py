"""A job array's request: N elements of one entrypoint, each a whole job.

An array travels as the job flow's `array` parameter (`ArrayRequest`): its rows, each a
mapping of job parameters (config_id, data_ids, artifact_ids, env, hardware, timeout, ...)
that override the run's own parameters for that element. The submit side (CLI, Python API,
HTTP API) and the flow check rows with the same code (`element_requests`), so a bad row is
refused, naming its row and field, before anything is submitted.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError, WithJsonSchema

from jobcloud.blocks.errors import ParameterError, UserError
from jobcloud.blocks.keys import check_key
from jobcloud.flows.catalog import Entrypoint
from jobcloud.flows.request import JobRequest, flow_signature, validate_request

ARRAY_DESCRIPTION = (
    "Run this entrypoint once per element: elements is a list of rows, each a mapping of job parameters "
    "that override the ones above for that element (e.g. data_ids). Leave empty for one job."
)
INDEX = "index"  # a row's own index (kept when a failed array is run again); default: its position


class ArrayRequest(BaseModel):
    """The `array` parameter of a job flow: run the entrypoint once per element."""

    model_config = ConfigDict(extra="forbid")
    elements: list[dict[str, Any]] = Field(
        default_factory=list,
        description="One row per element: job parameters (e.g. {'data_ids': ['data/exp1']}) that override "
        "this run's own for that element; an optional 'index' names the element. Empty: no array, one job.",
    )
    id: str = Field("", description="The array's id; empty: this flow run's id. Shards of one array share it.")
    parallel: NonNegativeInt = Field(
        0, description="At most this many elements at once; 0: as many as the host's cores and memory allow for the entrypoint's hardware."
    )
    max_failures: NonNegativeInt = Field(0, description="Start no new element after this many failed; 0: never stop early.")
    total: NonNegativeInt = Field(0, description="Elements of the whole array (all shards); 0: this run's.")


def array_parameter() -> inspect.Parameter:
    """The job flow's `array` parameter (after the job parameters): an object whose fields the
    run form shows, empty by default (one job)."""
    # Inline (no $ref), as `hardware`: the form and the deployment's Parameters tab show its fields.
    inline = {k: v for k, v in ArrayRequest.model_json_schema().items() if k not in ("title", "description")}
    kind = Annotated[ArrayRequest, WithJsonSchema(inline)]
    return inspect.Parameter("array", inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=ArrayRequest())


def row_columns(entry: Entrypoint) -> list[str]:
    """The columns a row of ``entry``'s array may have: its job parameters and `index`."""
    return [*flow_signature(entry).parameters, INDEX]


def element_requests(entry: Entrypoint, base: JobRequest, rows: list[Mapping[str, Any]]) -> Iterator[tuple[int, JobRequest]]:
    """(index, request) of each row: ``base`` with the row's values over it, validated.

    Raises `ParameterError` naming the row (1-based, as in the file) and the field.
    """
    columns = row_columns(entry)
    seen: set[int] = set()
    base_data = base.model_dump(exclude_none=True)
    for number, row in enumerate(rows, start=1):
        where = f"array row {number}"
        if not isinstance(row, Mapping):
            raise ParameterError(f"{where}: expected a mapping of job parameters, got {type(row).__name__}")
        unknown = sorted(set(row) - set(columns))
        if unknown:
            raise ParameterError(
                f"{where}: unknown column {', '.join(map(repr, unknown))}; the columns of this entrypoint are {', '.join(columns)}"
            )
        index = row.get(INDEX, number - 1)
        if isinstance(index, str) and index.strip().isdigit():
            index = int(index)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ParameterError(f"{where}: field index must be a whole number of 0 or more, got {index!r}")
        if index in seen:
            raise ParameterError(f"{where}: index {index} appears twice; each element needs its own")
        seen.add(index)
        values = {k: v for k, v in row.items() if k != INDEX and v is not None}
        try:
            request = JobRequest.model_validate({**base_data, **values})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "?"
            raise ParameterError(f"{where}: field {field}: {first['msg']}") from None
        _check_fields(entry, values, where)
        try:
            request = validate_request(entry, request)
        except ParameterError as exc:
            raise ParameterError(f"{where}: {exc}") from None
        yield index, request


def _check_fields(entry: Entrypoint, values: Mapping[str, Any], where: str) -> None:
    """The row's own keys and env names, each error naming its field (the whole request is
    validated after this, for what spans fields)."""
    for kind in ("config_id", "data_ids", "artifact_ids"):
        keys = values.get(kind) or []
        for key in [keys] if isinstance(keys, str) else keys:
            try:
                check_key(key)
            except UserError as exc:
                raise ParameterError(f"{where}: field {kind}: {exc}") from None
    unknown = sorted(set(values.get("env") or {}) - set(entry.app.env))
    if unknown:
        allowed = ", ".join(entry.app.env) or "none"
        raise ParameterError(f"{where}: field env: {', '.join(unknown)} not allowed for this entrypoint (allowed: {allowed})")


def check_size(count: int, most: int) -> None:
    """Refuse an empty array and one of more than ``most`` elements (`JOBCLOUD_ARRAY_MAX`)."""
    if count == 0:
        raise ParameterError("the array has no elements; give at least one row")
    if count > most:
        raise ParameterError(f"the array has {count} elements, more than JOBCLOUD_ARRAY_MAX ({most}); split it or raise the setting")

"""Submitting a job array: its rows from a file or a store prefix, checked, then one flow run
per shard.

Rows come from `--array FILE` (CSV, JSON Lines or YAML: one row per element, columns = the
job's parameters) or `--array-over PREFIX` (one element per file or folder directly under a
store prefix, as that element's data), or from a failed array (`--retry-failed ARRAY_ID`: its
elements that did not complete, with their own parameters and index). Every row is checked
(`element_requests`) and every input must exist before the first run is created: a bad row
exits 2, naming the row and the field, with nothing submitted.
"""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobcloud.blocks.errors import MissingKeyError, ParameterError, UserError
from jobcloud.blocks.keys import check_key
from jobcloud.blocks.settings import get_settings
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.flows.array_manifest import read_elements
from jobcloud.flows.array_request import INDEX, ArrayRequest, check_size, element_requests
from jobcloud.flows.catalog import Entrypoint
from jobcloud.flows.request import JobRequest, secret_blocks
from jobcloud.flows.secrets import require_secret_blocks

LIST_FIELDS = ("data_ids", "artifact_ids")
MAP_FIELDS = ("env", "secrets", "hardware")


class ArrayFileError(ParameterError):
    """An array file that cannot be read as rows."""


def read_array_file(path: Path) -> list[dict[str, Any]]:
    """The rows of an array file: `.csv`, `.jsonl`/`.ndjson`, or `.yaml`/`.yml`/`.json` (a list
    of mappings, or a mapping with `elements`).

    In a CSV, a list column (data_ids, artifact_ids) takes keys separated by `;`, and a mapping
    takes one column per name: `env.SEED`, `hardware.cpu`. Empty cells are left out.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArrayFileError(f"array file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArrayFileError(f"array file {path} cannot be read: {exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _csv_rows(path, text)
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_rows(path, text)
    if suffix in (".yaml", ".yml", ".json"):
        return _yaml_rows(path, text)
    raise ArrayFileError(f"array file {path}: unknown format {suffix or '(no suffix)'}; use .csv, .jsonl or .yaml")


def _csv_rows(path: Path, text: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number, record in enumerate(csv.DictReader(io.StringIO(text)), start=1):
        if None in record:
            raise ArrayFileError(f"array file {path}: row {number} has more cells than the header has columns")
        row: dict[str, Any] = {}
        for column, cell in record.items():
            cell = (cell or "").strip()
            if not cell:
                continue
            name, _, sub = column.strip().partition(".")
            if sub:
                if name not in MAP_FIELDS:
                    raise ArrayFileError(f"array file {path}: column {column!r}: only {', '.join(MAP_FIELDS)} take NAME.KEY columns")
                row.setdefault(name, {})[sub] = cell
            elif name in LIST_FIELDS:
                row[name] = [k.strip() for k in cell.split(";") if k.strip()]
            else:
                row[name] = cell
        rows.append(row)
    return rows


def _jsonl_rows(path: Path, text: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ArrayFileError(f"array file {path}: line {number} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise ArrayFileError(f"array file {path}: line {number} is not a JSON object")
        rows.append(row)
    return rows


def _yaml_rows(path: Path, text: str) -> list[dict[str, Any]]:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ArrayFileError(f"array file {path} is not valid YAML: {exc}") from None
    if isinstance(doc, Mapping) and "elements" in doc:
        doc = doc["elements"]
    if doc is None:
        return []
    if not isinstance(doc, list):
        raise ArrayFileError(f"array file {path}: expected a list of rows (mappings of job parameters)")
    return list(doc)


def rows_over(store: JobStore, prefix: str, kind: str = "data_ids") -> list[dict[str, Any]]:
    """One row per file or folder directly under ``prefix``, that key as the element's input."""
    prefix = check_key(prefix)
    try:
        entries = store.list(prefix)
    except MissingKeyError:
        raise ParameterError(f"--array-over {prefix}: nothing under that key in the job store {store.url}") from None
    if kind == "config_id":
        return [{kind: e.key} for e in entries]
    return [{kind: [e.key]} for e in entries]


def retry_rows(store: JobStore, array_id: str) -> list[dict[str, Any]]:
    """The elements of array ``array_id`` that did not complete, each with its index and row."""
    latest, runs = read_elements(store, check_key(array_id))
    if not runs:
        raise ParameterError(
            f"--retry-failed {array_id}: no array with that id in the job store {store.url} (or none of its runs has ended)"
        )
    rows = [{**row.parameters, INDEX: row.index} for row in sorted(latest.values(), key=lambda r: r.index) if row.state != "Completed"]
    if not rows:
        raise ParameterError(f"--retry-failed {array_id}: every element completed; nothing to run again")
    return rows


def base_for(entry: Entrypoint, base: JobRequest, rows: list[dict[str, Any]]) -> JobRequest:
    """The run's own parameters: ``base``, with each required input it lacks taken from the first
    row (the flow's signature requires them; every row sets its own anyway)."""
    fill = {k: rows[0][k] for k in entry.required_inputs if not getattr(base, k) and rows and rows[0].get(k)}
    return base.model_copy(update=fill) if fill else base


@dataclass
class ArrayPlan:
    """A checked array, split into shards: what `submit_array` creates."""

    base: JobRequest
    shards: list[ArrayRequest]
    total: int

    @property
    def array_id(self) -> str:
        return self.shards[0].id


def plan_array(
    entry: Entrypoint,
    base: JobRequest,
    rows: list[dict[str, Any]],
    store: JobStore,
    *,
    parallel: int = 0,
    shards: int | None = None,
    max_failures: int = 0,
    array_id: str | None = None,
    before_secrets: Any = None,
) -> ArrayPlan:
    """Check every row (and that every input exists), then split the rows into shards
    (default: one per `JOBCLOUD_ARRAY_SHARD_SIZE` elements)."""
    settings = get_settings()
    check_size(len(rows), settings.array_max)
    keys: set[str] = set()
    blocks: dict[str, str] = {}
    for _, request in element_requests(entry, base, rows):
        keys.update(key for _, key in request.inputs())
        blocks.update(secret_blocks(entry, request))
    for key in sorted(keys):
        try:
            store.require(key)
        except UserError as exc:
            rows_with = [n for n, row in enumerate(rows, start=1) if key in json.dumps(row)]
            where = f"array row {rows_with[0]}: " if rows_with else ""
            raise ParameterError(f"{where}{exc}") from None
    if blocks:
        if before_secrets is not None:
            before_secrets()
        require_secret_blocks(blocks)
    count = shards or max(1, math.ceil(len(rows) / settings.array_shard_size))
    if count < 1 or count > len(rows):
        raise ParameterError(f"--shards {count}: give 1 to {len(rows)} (the number of elements)")
    # Indices are fixed before splitting, so every shard writes under the array's own numbers.
    indexed = [{**row, INDEX: row.get(INDEX, n)} for n, row in enumerate(rows)]
    # One id for every shard; with one shard the run's own id is the array's (known once created).
    shared = array_id or (str(uuid.uuid4()) if count > 1 else "")
    bounds = [round(n * len(indexed) / count) for n in range(count + 1)]
    parts = [indexed[bounds[n] : bounds[n + 1]] for n in range(count)]
    return ArrayPlan(
        base=base_for(entry, base, rows),
        shards=[ArrayRequest(elements=p, id=shared, parallel=parallel, max_failures=max_failures, total=len(rows)) for p in parts],
        total=len(rows),
    )


def submit_array(client: Any, ref: Any, plan: ArrayPlan, priority: int, extra_tags: list[str] | None = None) -> tuple[str, list[Any]]:
    """Create one flow run per shard; the array's id and the runs. Each run is tagged
    `array:<id>` so `jobcloud jobs ls` and the UI's tag filter find an array's runs."""
    from jobcloud.deployments.jobs.submit import submit

    runs: list[Any] = []
    array_id = plan.array_id
    for shard in plan.shards:
        if runs and not array_id:
            raise AssertionError("shards of one array share an id")  # plan_array gives one
        run = submit(client, ref, plan.base, priority, [*(extra_tags or []), *([f"array:{array_id}"] if array_id else [])], array=shard)
        runs.append(run)
        if not array_id:
            array_id = str(run.id)
    return array_id, runs

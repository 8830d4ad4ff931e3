"""The record of a job array: one row per element, in the job store beside the elements.

Each element is a whole job with its own manifest at jobs/<array id>/<index>/manifest.json.
Each flow run of the array (one per shard, one more per `--retry-failed`) writes its rows to
jobs/<array id>/runs/<run id>.json when it ends, then the merged view of every run so far to
jobs/<array id>/array.json, the array's manifest. Where two runs ran the same element (a
retry), the later one's row wins. Readers (`jobcloud jobs show`, `--retry-failed`) merge the
run files themselves, so two shards that end at once cannot hide each other's rows.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from jobcloud.blocks.errors import MissingKeyError
from jobcloud.blocks.keys import join_key
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.flows.manifest import job_prefix

# How an element ended: a job's states, and NotStarted for one a cancel or `max_failures` kept
# from starting.
ElementState = Literal["Completed", "Failed", "TimedOut", "Cancelled", "Crashed", "NotStarted"]
ORDER: tuple[str, ...] = ("Completed", "Failed", "TimedOut", "Cancelled", "Crashed", "NotStarted")


class ElementRow(BaseModel):
    """One element of an array, as its run recorded it."""

    index: int
    state: ElementState
    seconds: float = 0.0
    exit_code: int | None = None
    attempts: int = 0
    files: int = 0
    bytes: int = 0
    manifest: str | None = Field(None, description="Key of the element's own manifest.")
    message: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict, description="The element's row, to run it again.")
    run_id: str = ""
    finished_at: datetime | None = None


class ArrayManifest(BaseModel):
    """Every element of an array and how it ended."""

    array_id: str
    application: str
    version: str
    entrypoint: str
    state: Literal["Completed", "Failed", "Cancelled", "Running"]
    counts: dict[str, int]
    total: int
    runs: list[str]
    elements: list[ElementRow]
    updated_at: datetime


def run_key(array_id: str, run_id: str) -> str:
    """Where one flow run of the array writes its rows."""
    return join_key(job_prefix(array_id), "runs", f"{run_id}.json")


def array_key(array_id: str) -> str:
    """The array's manifest."""
    return join_key(job_prefix(array_id), "array.json")


def element_prefix(array_id: str, index: int) -> str:
    """Where element ``index`` keeps its files: jobs/<array id>/<index>."""
    return join_key(job_prefix(array_id), str(index))


def counts_of(rows: list[ElementRow]) -> dict[str, int]:
    """How many elements ended in each state, in a fixed order, zeros left out."""
    found = Counter(r.state for r in rows)
    return {state: found[state] for state in ORDER if found[state]}


def counts_text(counts: dict[str, int], total: int) -> str:
    """`48 of 50 completed, 1 failed, 1 timed out` for a state message."""
    names = {"TimedOut": "timed out", "NotStarted": "not started"}
    parts = [f"{counts.get('Completed', 0)} of {total} completed"]
    parts += [f"{n} {names.get(s, s.lower())}" for s, n in counts.items() if s != "Completed"]
    return ", ".join(parts)


def write_run_rows(store: JobStore, array_id: str, run_id: str, rows: list[ElementRow]) -> None:
    """This run's rows, one JSON document (written once, when the run ends)."""
    doc = {"run_id": run_id, "elements": [r.model_dump(mode="json") for r in rows]}
    store.write_bytes(run_key(array_id, run_id), json.dumps(doc, separators=(",", ":")).encode())


def read_elements(store: JobStore, array_id: str) -> tuple[dict[int, ElementRow], list[str]]:
    """Every element's latest row over all runs of the array, and the runs' ids."""
    prefix = join_key(job_prefix(array_id), "runs")
    try:
        entries = store.list(prefix)
    except MissingKeyError:
        return {}, []
    latest: dict[int, ElementRow] = {}
    runs: list[str] = []
    oldest = datetime.min.replace(tzinfo=UTC)
    for entry in entries:
        if entry.type != "file" or not entry.key.endswith(".json"):
            continue
        doc = json.loads(store.read_bytes(entry.key))
        runs.append(doc.get("run_id", ""))
        for data in doc.get("elements", []):
            row = ElementRow.model_validate(data)
            had = latest.get(row.index)
            if had is None or (row.finished_at or oldest) >= (had.finished_at or oldest):
                latest[row.index] = row
    return latest, runs


def merged_manifest(store: JobStore, array_id: str, ref: Any | None, total: int, running: bool = False) -> ArrayManifest:
    """The array's manifest from every run's rows so far (``ref``: its entrypoint, if known)."""
    latest, runs = read_elements(store, array_id)
    rows = [latest[i] for i in sorted(latest)]
    counts = counts_of(rows)
    total = max(total, len(rows))
    if running:
        state = "Running"
    elif counts.get("Completed", 0) == total:
        state = "Completed"
    elif counts.get("Cancelled") or counts.get("NotStarted"):
        state = "Cancelled" if not (counts.get("Failed") or counts.get("TimedOut") or counts.get("Crashed")) else "Failed"
    else:
        state = "Failed"
    return ArrayManifest(
        array_id=array_id,
        application=ref.application if ref is not None else "",
        version=ref.version if ref is not None else "",
        entrypoint=ref.entrypoint if ref is not None else "",
        state=state,
        counts=counts,
        total=total,
        runs=runs,
        elements=rows,
        updated_at=datetime.now(UTC),
    )


def write_array_manifest(store: JobStore, manifest: ArrayManifest) -> None:
    """jobs/<array id>/array.json."""
    store.write_bytes(array_key(manifest.array_id), manifest.model_dump_json(indent=1).encode())


def read_array_manifest(store: JobStore, array_id: str) -> ArrayManifest | None:
    """The array's manifest, or None when ``array_id`` is no array of this store."""
    key = array_key(array_id)
    if not store.exists(key):
        return None
    return ArrayManifest.model_validate_json(store.read_bytes(key))

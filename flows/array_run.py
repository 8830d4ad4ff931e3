"""A job array as one flow run: each element a task run that is a whole job.

`run_array` starts at most `parallel` elements at once, each on its own thread, as the task
run `element-<index>` (stage inputs, run the container with the job's retries and timeout,
upload, the element's manifest; `jobcloud.flows.job.run_job` with an element). It keeps one
small row per element (`ElementRow`), never an element's result, log or future, so 10,000
elements cost the flow a few MB. A progress artifact shows done/total, the rate and the ETA;
at the end a table artifact lists the elements and the array's manifest names each element's.

The elements' containers carry the run's job label: the run's guard removes them all if the
run's process dies or is cancelled, and the sweeper judges them by the run's state.
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run as runtime_flow_run
from prefect.states import Cancelled, Failed, State

from jobcloud.blocks.settings import get_settings
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.flows.array_manifest import (
    ElementRow,
    counts_of,
    counts_text,
    merged_manifest,
    write_array_manifest,
    write_run_rows,
)
from jobcloud.flows.array_request import INDEX, ArrayRequest, element_requests
from jobcloud.flows.cancel_watch import current_flag, raise_if_attempt_over
from jobcloud.flows.catalog import Entrypoint, EntrypointRef
from jobcloud.flows.job import run_job
from jobcloud.flows.manifest import JobEnded, JobManifest
from jobcloud.flows.output_images import prefect_key
from jobcloud.flows.request import JobRequest
from jobcloud.flows.retries import empty_folders

PROGRESS_EVERY_S = 2.0
TABLE_ROWS = 1000  # the table artifact's rows (failures first); the manifest has every element


@task(name="element", task_run_name="element-{index}", cache_policy=NONE, retries=0, persist_result=False)
def run_element(ref: EntrypointRef, entry: Entrypoint, index: int, request: JobRequest, store: JobStore, array_id: str) -> Any:
    """One element: a whole job under jobs/<array id>/<index>/. Its container's retries are the
    job's (the element's task run is not retried on top)."""
    result = run_job(ref, entry, request, store, element=(array_id, index))
    # A summary, not the manifest (in the store already): Prefect keeps each task's result for
    # the run's life, and 10,000 manifests would be the array's largest use of memory.
    return summary(result) if isinstance(result, JobManifest) else result


def summary(manifest: JobManifest) -> dict[str, Any]:
    """What an element's row needs of its manifest."""
    return {
        "job_id": manifest.job_id,
        "state": manifest.state,
        "exit_code": manifest.exit_code,
        "attempts": manifest.attempts,
        "files": len(manifest.outputs),
        "bytes": sum(o.size for o in manifest.outputs),
        "message": manifest.message,
    }


def default_parallel(entry: Entrypoint, request: JobRequest) -> int:
    """As many elements at once as this host's cores and memory hold for the job's hardware
    (one per core where the catalog gives no VCPU). A pool's limit bounds containers on top
    (`pool_slot`), whatever this says."""
    if get_settings().runner == "process":
        return 1
    hw = entry.hardware.limits
    override = request.hardware
    cpu = (override.cpu if override and override.cpu else None) or hw.VCPU or 1.0
    memory_mb = (override.memory if override and override.memory else None) or hw.MEMORY
    cores = os.cpu_count() or 1
    fits = max(1, int(cores / cpu))
    if memory_mb:
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
        fits = min(fits, max(1, int(total_mb * 0.8 / memory_mb)))
    return fits


@dataclass
class ElementTally:
    """What the element threads share: the next element, the rows so far, the counts."""

    todo: Iterator[tuple[int, JobRequest, dict[str, Any]]]
    total: int
    max_failures: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    rows: list[ElementRow] = field(default_factory=list)
    done: int = 0
    failed: int = 0

    def next(self) -> tuple[int, JobRequest, dict[str, Any]] | None:
        with self.lock:
            if self.stop.is_set():
                return None
            return next(self.todo, None)

    def record(self, row: ElementRow) -> None:
        with self.lock:
            self.rows.append(row)
            self.done += 1
            if row.state != "Completed":
                self.failed += 1
                if self.max_failures and self.failed >= self.max_failures:
                    self.stop.set()


def _row(index: int, parameters: dict[str, Any], state: State, run_id: str, seconds: float) -> ElementRow:
    """The element's row from its task run's final state (its manifest, or the one its failure carries)."""
    manifest: dict[str, Any] | None = None
    if state.is_completed():
        data = state.result(raise_on_failure=False)
        manifest = data if isinstance(data, dict) else None
    elif isinstance(state.data, JobEnded):
        manifest = state.data.manifest
    else:
        data = state.result(raise_on_failure=False) if state.data is not None else None
        manifest = data.manifest if isinstance(data, JobEnded) else None
    now = datetime.now(UTC)
    if manifest is None:  # the element failed before its job began (bad input, store away)
        return ElementRow(
            index=index,
            state="Cancelled" if state.is_cancelled() else "Failed",
            seconds=round(seconds, 3),
            message=state.message,
            parameters=parameters,
            run_id=run_id,
            finished_at=now,
        )
    outputs = manifest.get("outputs") or []
    files = manifest.get("files", len(outputs))
    size = manifest.get("bytes", sum(o.get("size", 0) for o in outputs))
    return ElementRow(
        index=index,
        state=manifest["state"],
        seconds=round(seconds, 3),
        exit_code=manifest.get("exit_code"),
        attempts=manifest.get("attempts", 0),
        files=files,
        bytes=size,
        manifest=f"jobs/{manifest['job_id']}/manifest.json",
        message=(manifest.get("message") or "").splitlines()[0] if manifest.get("message") else None,
        parameters=parameters,
        run_id=run_id,
        finished_at=now,
    )


def _element_loop(ref: EntrypointRef, entry: Entrypoint, store: JobStore, array_id: str, run_id: str, tally: ElementTally) -> None:
    """One thread: take the next element, run it, record its row; until none is left or the
    array stops (cancel, `max_failures`)."""
    cancel = current_flag()
    in_container = get_settings().runner == "process"
    while True:
        if cancel is not None and cancel.is_set():
            tally.stop.set()
        item = tally.next()
        if item is None:
            return
        index, request, parameters = item
        if in_container:  # one /files, elements one by one: the last one's files go first
            down, up = entry.handler.files_down, entry.handler.files_up
            folders = [f for f in (down.config_id, down.data_ids, down.artifact_ids, up.output, up.log, up.artifact) if f]
            empty_folders(get_settings().files_dir, folders)
        t = time.perf_counter()
        state = run_element(ref, entry, index, request, store, array_id, return_state=True)
        tally.record(_row(index, parameters, state, run_id, time.perf_counter() - t))


def run_array(ref: EntrypointRef, entry: Entrypoint, base: JobRequest, array: ArrayRequest, store: JobStore) -> Any:
    """The body of a job flow called with an `array`: every element, then the array's manifest
    and final state (Completed when every element completed, else Failed with the counts, or
    Cancelled)."""
    logger = get_run_logger()
    run_id = str(runtime_flow_run.id)
    array_id = array.id or run_id
    # Every row is checked before the first element starts (a bad row stops the array whole),
    # then checked again, one at a time, as its element starts: 10,000 requests are not kept.
    indices = [index for index, _ in element_requests(entry, base, array.elements)]
    position = {index: n for n, index in enumerate(indices)}
    total = len(indices)
    parallel = min(array.parallel or default_parallel(entry, base), total)
    logger.info(
        "array %s: %d element%s, at most %d at once, outputs under jobs/%s/<index>/",
        array_id,
        total,
        "" if total == 1 else "s",
        parallel,
        array_id,
    )
    todo = ((index, request, _own(array.elements[position[index]])) for index, request in element_requests(entry, base, array.elements))
    tally = ElementTally(todo=iter(todo), total=total, max_failures=array.max_failures)
    progress = create_progress_artifact(
        progress=0.0, key=prefect_key(ref.application, ref.entrypoint, "array-progress"), description=f"0 of {total} elements done"
    )
    started = time.monotonic()
    threads = [
        threading.Thread(
            target=contextvars.copy_context().run,
            args=(_element_loop, ref, entry, store, array_id, run_id, tally),
            name=f"jobcloud-element-{n}",
            daemon=True,  # a cancel's SIGTERM must not wait for them: the guard stops their containers
        )
        for n in range(parallel)
    ]
    for thread in threads:
        thread.start()
    last = 0.0
    try:
        while any(t.is_alive() for t in threads):
            threads[0].join(timeout=0.5) if threads[0].is_alive() else time.sleep(0.5)
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S:
                last = now
                _update_progress(progress, tally, now - started)
    finally:
        tally.stop.set()
    _update_progress(progress, tally, time.monotonic() - started)
    raise_if_attempt_over()  # the server ended the run (or is out of reach): no rows, no manifest
    cancelled = (current_flag() is not None and current_flag().is_set()) or False
    rows = sorted(tally.rows, key=lambda r: r.index)
    ran = {r.index for r in rows}
    rows += [
        ElementRow(index=i, state="NotStarted", parameters=_own(array.elements[position[i]]), run_id=run_id, finished_at=datetime.now(UTC))
        for i in sorted(set(indices) - ran)
    ]
    write_run_rows(store, array_id, run_id, rows)
    manifest = merged_manifest(store, array_id, ref, array.total or total)
    write_array_manifest(store, manifest)
    counts = counts_of(rows)
    _table_artifact(ref, array_id, rows, counts, total)
    message = f"array {array_id}: {counts_text(counts, total)}"
    if counts.get("Completed", 0) == total:
        logger.info(message)
        return {"array_id": array_id, "counts": counts, "total": total, "manifest": f"jobs/{array_id}/array.json"}
    data = JobEnded(message, {"array_id": array_id, "counts": counts, "total": total})
    if cancelled:
        logger.warning(message)
        return Cancelled(message=message, data=data)
    if array.max_failures and tally.failed >= array.max_failures:
        message += f"; stopped after {tally.failed} failures (max_failures {array.max_failures})"
    logger.error(message)
    return Failed(message=message, data=data)


def _own(row: dict[str, Any]) -> dict[str, Any]:
    """An element's own parameters (its row without the index), as its record keeps them."""
    return {k: v for k, v in row.items() if k != INDEX}


def _update_progress(artifact_id: Any, tally: ElementTally, elapsed: float) -> None:
    done, total = tally.done, tally.total
    rate = done / elapsed * 60 if elapsed > 0 else 0.0
    eta = (total - done) / (done / elapsed) if done and elapsed > 0 else None
    text = f"{done} of {total} elements done ({tally.failed} not completed), {rate:.0f}/min"
    if eta is not None and done < total:
        text += f", about {eta:.0f} s left"
    try:
        update_progress_artifact(artifact_id, progress=100.0 * done / max(total, 1), description=text)
    except Exception:  # noqa: BLE001 - progress is a report: never the array's failure
        pass


def _table_artifact(ref: EntrypointRef, array_id: str, rows: list[ElementRow], counts: dict[str, int], total: int) -> None:
    """The elements as a table: index, state, seconds, exit code, outputs (failures first)."""
    shown = sorted(rows, key=lambda r: (r.state == "Completed", r.index))[:TABLE_ROWS]
    table = [
        {
            "index": r.index,
            "state": r.state,
            "seconds": r.seconds,
            "exit_code": r.exit_code,
            "attempts": r.attempts,
            "files": r.files,
            "outputs": f"jobs/{array_id}/{r.index}/",
            "message": r.message or "",
        }
        for r in shown
    ]
    more = f" The first {TABLE_ROWS} rows (failures first); the rest are in jobs/{array_id}/array.json." if len(rows) > TABLE_ROWS else ""
    create_table_artifact(
        key=prefect_key(ref.application, ref.entrypoint, "array"),
        table=table,
        description=f"Array `{array_id}`: {counts_text(counts, total)}. Outputs: `jobcloud jobs outputs {array_id} DIR`.{more}",
    )

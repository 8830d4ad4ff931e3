"""`jobcloud run ... --array FILE | --array-over PREFIX | --retry-failed ARRAY_ID`: one
submission, many elements (a job array), and a progress bar while it runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jobcloud.blocks.errors import ParameterError
from jobcloud.deployments.cli.output import err, out, print_json
from jobcloud.deployments.pools.work_pools import queue_name

POLL_S = 1.0


def rows_from_options(store: Any, array_file: Path | None, array_over: str | None, retry_failed: str | None) -> list[dict[str, Any]]:
    """The rows that exactly one of --array, --array-over and --retry-failed gives."""
    from jobcloud.deployments.jobs.arrays import read_array_file, retry_rows, rows_over

    given = [name for name, value in (("--array", array_file), ("--array-over", array_over), ("--retry-failed", retry_failed)) if value]
    if len(given) > 1:
        raise ParameterError(f"{' and '.join(given)}: give only one of them")
    if array_file is not None:
        return read_array_file(array_file)
    if array_over is not None:
        return rows_over(store, array_over)
    assert retry_failed is not None
    return retry_rows(store, retry_failed)


def run_array(
    ref: Any,
    entry: Any,
    base: Any,
    rows: list[dict[str, Any]],
    *,
    parallel: int,
    shards: int | None,
    max_failures: int,
    array_id: str | None,
    wait: bool,
    as_json: bool,
    priority: int,
) -> int:
    """Check, submit, and (unless --no-wait) follow an array to its end. Exit 0 when every
    element completed, 1 otherwise, 2 for a bad row (nothing submitted)."""
    from jobcloud.blocks.store.factory import store_from_settings
    from jobcloud.deployments.jobs.arrays import plan_array, submit_array
    from jobcloud.deployments.jobs.submit import connect_api

    store = store_from_settings()
    plan = plan_array(
        entry, base, rows, store, parallel=parallel, shards=shards, max_failures=max_failures, array_id=array_id, before_secrets=connect_api
    )
    queue_name(priority)  # a bad priority fails before anything is created
    api = connect_api()
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        array_id, runs = submit_array(client, ref, plan, priority)
        run_ids = [str(r.id) for r in runs]
        if not wait:
            if as_json:
                print_json({"array_id": array_id, "runs": run_ids, "elements": plan.total})
            else:
                print(array_id)
            return 0
        if not as_json:
            err.print(
                f"submitted array {array_id}: {plan.total} elements in {len(runs)} run{'s' if len(runs) > 1 else ''} "
                f"to {ref.deployment_full_name} at {api}",
                highlight=False,
            )
        states = _follow(client, run_ids, plan.total, store, array_id, quiet=as_json)
    return _report(store, ref, array_id, run_ids, states, plan.total, as_json)


def _follow(client: Any, run_ids: list[str], total: int, store: Any, array_id: str, quiet: bool) -> dict[str, Any]:
    """Wait for every run of the array, with a progress bar of elements done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    final: dict[str, Any] = {}
    with Progress(
        TextColumn("array"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    ) as bar:
        task = bar.add_task("", total=total)
        while len(final) < len(run_ids):
            for run_id in run_ids:
                if run_id in final:
                    continue
                run = client.read_flow_run(run_id)
                if run.state is not None and run.state.is_final():
                    final[run_id] = run.state
            bar.update(task, completed=_elements_done(client, run_ids), description=f"{len(final)}/{len(run_ids)} runs ended")
            if len(final) < len(run_ids):
                time.sleep(POLL_S)
        bar.update(task, completed=_elements_done(client, run_ids))
    return final


def _elements_done(client: Any, run_ids: list[str]) -> int:
    """Elements whose task run has ended, over the array's runs (one count query)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName, TaskRunFilterStateType
    from prefect.client.schemas.objects import StateType

    try:
        return client.count_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)),
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_="element-"),
                state=TaskRunFilterStateType(any_=[StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]),
            ),
        )
    except Exception:  # noqa: BLE001 - the bar is a report; the run states decide
        return 0


def _report(store: Any, ref: Any, array_id: str, run_ids: list[str], states: dict[str, Any], total: int, as_json: bool) -> int:
    from jobcloud.flows.array_manifest import counts_text, merged_manifest

    manifest = merged_manifest(store, array_id, ref, total)
    ok = all(s.is_completed() for s in states.values()) and manifest.counts.get("Completed", 0) == manifest.total
    if as_json:
        print_json(
            {
                "array_id": array_id,
                "runs": run_ids,
                "state": manifest.state,
                "counts": manifest.counts,
                "total": manifest.total,
                "manifest": f"jobs/{array_id}/array.json",
            }
        )
        return 0 if ok else 1
    colour = "green" if ok else "red"
    out.print(f"array {array_id} [bold {colour}]{manifest.state}[/]: {counts_text(manifest.counts, manifest.total)}", highlight=False)
    for row in [r for r in manifest.elements if r.state != "Completed"][:20]:
        out.print(f"  element {row.index}: {row.state}" + (f" - {row.message}" if row.message else ""), markup=False, highlight=False)
    for state in states.values():
        if not state.is_completed() and not manifest.elements:
            err.print(state.message or state.name, markup=False, highlight=False)
    out.print(f"outputs: jobs/{array_id}/<index>/  (jobcloud jobs outputs {array_id} DIR)", highlight=False)
    if not ok:
        out.print(f"run the elements that did not complete again: jobcloud run {ref} --retry-failed {array_id}", highlight=False)
    return 0 if ok else 1

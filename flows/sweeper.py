"""The sweeper: removes what jobs left behind once their runs have ended.

Every job container carries the labels `io.jobcloud.job-id` and `io.jobcloud.api` (the Prefect
API that owns the run), and every work folder a `job.json` naming that API. A container or work
folder is removed when its run is final (Completed, Failed, Crashed, Cancelled...) or unknown to
that server; runs that are still queued or running are never touched, nor anything that belongs
to another Prefect server sharing this engine or JobCloud home.

Job guards (job_guard.py) clean up at once when a job's process dies; the sweeper is the net
under them: for a guard that was killed too, an engine that was down while a job ended, or a
whole host that went away. JobCloud's worker sweeps when it starts and every
`JOBCLOUD_SWEEP_INTERVAL_S` seconds; the local server sweeps when it starts; `jobcloud sweep`
sweeps on demand.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobcloud.blocks.engine import docker_client
from jobcloud.blocks.errors import JobCloudError
from jobcloud.blocks.settings import get_settings
from jobcloud.flows.container_spec import API_LABEL, JOB_LABEL

# Prefect is imported inside the functions: `jobcloud sweep` imports this module before the
# API is fixed.

WORK_MARKER = "job.json"


@dataclass
class SweepReport:
    """What one sweep found and removed."""

    containers_removed: list[str] = field(default_factory=list)
    folders_removed: list[str] = field(default_factory=list)
    kept: int = 0
    errors: list[str] = field(default_factory=list)


def _run_is_over(client: Any, job_id: str, cache: dict[str, bool]) -> bool:
    """True when the run is final or the server has never heard of it."""
    from prefect.exceptions import ObjectNotFound

    if job_id not in cache:
        try:
            uuid.UUID(job_id)
        except ValueError:
            cache[job_id] = False  # not ours to judge
            return False
        try:
            run = client.read_flow_run(job_id)
            cache[job_id] = run.state is not None and run.state.is_final()
        except ObjectNotFound:
            cache[job_id] = True
    return cache[job_id]


def sweep(api_url: str, work_root: Path, engine: Any | None) -> SweepReport:
    """Remove the containers and work folders of ended runs of the server at ``api_url``.

    ``engine`` is a Docker SDK client, or None to sweep only work folders (no engine here).
    """
    from prefect.client.orchestration import get_client

    report = SweepReport()
    over: dict[str, bool] = {}
    with get_client(sync_client=True) as client:
        if engine is not None:
            try:
                # Sparse: the listing alone, so a container removed meanwhile fails nothing.
                found = engine.containers.list(all=True, sparse=True, filters={"label": JOB_LABEL})
            except Exception as exc:  # noqa: BLE001 - engine away: sweep folders anyway
                found = []
                report.errors.append(f"listing containers: {exc}")
            for container in found:
                labels = container.attrs.get("Labels") or {}
                if labels.get(API_LABEL, api_url) != api_url:
                    continue
                if _run_is_over(client, labels[JOB_LABEL], over):
                    try:
                        container.remove(force=True)
                        report.containers_removed.append(container.id[:12])
                    except Exception as exc:  # noqa: BLE001 - gone already, or engine busy
                        report.errors.append(f"removing {container.id[:12]}: {exc}")
                else:
                    report.kept += 1
        for folder in sorted(work_root.glob("*/" + WORK_MARKER)):
            work = folder.parent
            try:
                marker = json.loads(folder.read_text())
            except (OSError, ValueError):
                continue
            if marker.get("api") != api_url:
                continue
            if _run_is_over(client, work.name, over):
                shutil.rmtree(work, ignore_errors=True)
                report.folders_removed.append(work.name)
            else:
                report.kept += 1
    return report


def mark_work_folder(work: Path, api_url: str) -> None:
    """Say which Prefect server owns the work folder ``work`` (read by `sweep`)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / WORK_MARKER).write_text(json.dumps({"api": api_url}))


def sweep_here() -> SweepReport:
    """One sweep of this host's engine and work folders, for the Prefect API configured here."""
    from prefect.settings import get_current_settings

    try:
        engine = docker_client(timeout=30)
    except JobCloudError:
        engine = None  # no engine here: folders only
    return sweep(str(get_current_settings().api.url), get_settings().work_root, engine)


if __name__ == "__main__":
    # `python -m jobcloud.flows.sweeper`: one sweep for the API in PREFECT_API_URL (the local server
    # starts this in the background; `jobcloud sweep` is the same with a report).
    sweep_here()

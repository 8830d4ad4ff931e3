"""The `tes-task` flow: one GA4GH TES task (a `TesPlan`) as one JobCloud job.

The same job path as a catalog job, with a TES task's shape: stage-inputs places each input at
its container path (job-store keys, inline content), run-container runs each executor in order
in its own container of its own image, upload-outputs puts each output in the job store; then
the container log, the manifest and the task's run log (jobs/<id>/tes.json). The job's guard,
the cancel watch, the pool slot and the sweeper labels are the catalog job's.

Every container path a task names lives in the job's work folder at the same path under
`files/` (`/data/in.txt` -> `<work>/files/data/in.txt`); each mount root of the plan is
bind-mounted from there into every executor, so executors share inputs, outputs and volumes.
"""

from __future__ import annotations

import glob
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.exceptions import Abort
from prefect.runtime import flow_run as runtime_flow_run
from prefect.states import Cancelled, Failed

from jobcloud.blocks.engine import docker_client
from jobcloud.blocks.errors import JobCloudError, MissingKeyError, UserError
from jobcloud.blocks.keys import check_key, join_key, last_name
from jobcloud.blocks.object_fetch import ObjectFetchError, fetch_object
from jobcloud.blocks.settings import get_settings
from jobcloud.blocks.store.factory import store_from_settings
from jobcloud.blocks.store.job_store import FileRecord, JobStore
from jobcloud.blocks.url_fetch import UrlFetchError, fetch_url
from jobcloud.blocks.url_policy import is_object_url
from jobcloud.flows.cancel_watch import AttemptOver, JobCancelled, watch_for_cancel
from jobcloud.flows.container_run import run_container
from jobcloud.flows.container_spec import API_LABEL, HOST_LABEL, JOB_LABEL, LABEL_PREFIX, ContainerSpec, host_name, owning_api
from jobcloud.flows.job import job_folders
from jobcloud.flows.job_guard import JobGuard, tracking_left_containers
from jobcloud.flows.manifest import InputRecord, JobManifest, OutputRecord, Timings, job_prefix
from jobcloud.flows.pool_slots import pool_slot
from jobcloud.flows.sweeper import mark_work_folder
from jobcloud.flows.tes_plan import (
    EXECUTOR_ERROR_STATE,
    TES_APPLICATION,
    TES_ENTRYPOINT,
    TES_FLOW_NAME,
    TES_VERSION,
    ExecutorPlan,
    ExecutorRecord,
    InputPlan,
    OutputFileRecord,
    OutputPlan,
    TesPlan,
    TesRunLog,
    run_log_key,
)

# The last lines of an executor's output kept in its ExecutorLog.
STDOUT_TAIL_CHARS = 16 * 1024
# Redirects an executor's stdin/stdout/stderr to files (its paths as arguments, never in the
# script's text), then runs its command: needs /bin/sh in the image, only when it names files.
STDIO_SCRIPT = 'i=$1; o=$2; e=$3; shift 3; [ -n "$i" ] && exec <"$i"; [ -n "$o" ] && exec >"$o"; [ -n "$e" ] && exec 2>"$e"; exec "$@"'


class TesContainerSpec(ContainerSpec):
    """A catalog container spec with a TES executor's mounts and working folder instead of /files."""

    mounts: dict[str, str] = {}  # container folder -> host folder
    workdir: str | None = None

    def create_kwargs(self, gpu_kwargs: dict | None = None) -> dict:
        kwargs = super().create_kwargs(gpu_kwargs)
        kwargs["volumes"] = {host: {"bind": path, "mode": "rw"} for path, host in self.mounts.items()}
        if self.workdir:
            kwargs["working_dir"] = self.workdir
        else:
            kwargs.pop("working_dir", None)  # the image's own, as TES says
        return kwargs


def host_path(files_dir: Path, path: str) -> Path:
    """Where container path ``path`` lives on this host (checked absolute and normalized by the API)."""
    return files_dir / path.lstrip("/")


def executor_command(ex: ExecutorPlan) -> list[str]:
    """The executor's argv, behind the redirection script when it names stdin/stdout/stderr files."""
    if not (ex.stdin or ex.stdout or ex.stderr):
        return list(ex.command)
    return ["/bin/sh", "-c", STDIO_SCRIPT, "tes-stdio", ex.stdin or "", ex.stdout or "", ex.stderr or "", *ex.command]


def executor_spec(plan: TesPlan, index: int, files_dir: Path, job_id: str) -> TesContainerSpec:
    """The container of executor ``index``: its image and command, the task's mounts and hardware."""
    ex = plan.executors[index]
    return TesContainerSpec(
        image=ex.image,
        command=executor_command(ex),
        environment=dict(ex.env),
        host_files=str(files_dir),
        mounts={root: str(host_path(files_dir, root)) for root in plan.mount_roots()},
        workdir=ex.workdir,
        nano_cpus=int(plan.cpu * 1e9) if plan.cpu else None,
        mem_limit_bytes=plan.memory_mb * 1024 * 1024 if plan.memory_mb else None,
        gpus=plan.gpu,
        labels={
            JOB_LABEL: job_id,
            f"{LABEL_PREFIX}.flow-run-id": job_id,
            f"{LABEL_PREFIX}.application": TES_APPLICATION,
            f"{LABEL_PREFIX}.entrypoint": TES_ENTRYPOINT,
            f"{LABEL_PREFIX}.tes-executor": str(index),
            API_LABEL: owning_api(),
            HOST_LABEL: host_name(),
        },
        timeout=plan.timeout_s,
    )


class TaskSystemError(JobCloudError):
    """Not the executors' fault: an input that cannot be fetched, an output that is missing."""


def check_free_disk(work: Path, disk_gb: float | None) -> None:
    """Refuse to start a task asking for more disk (TES resources.disk_gb) than the filesystem
    of the worker's work folder has free: it would fail later, half-staged, on a full disk."""
    if not disk_gb:
        return
    work.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(work).free / 1e9
    if free_gb < disk_gb:
        raise TaskSystemError(
            f"the task needs resources.disk_gb={disk_gb:g} GB but the worker host's work folder ({work}) has {free_gb:.1f} GB free; "
            "ask for less, or give the worker a work folder with more free disk (JOBCLOUD_WORKDIR)"
        )


@task(name="stage-inputs", cache_policy=NONE, retries=0)
def stage_task_inputs(store: JobStore, plan: TesPlan, files_dir: Path, work: Path) -> list[InputRecord]:
    """Create the task's folders (`TesPlan.folders`), then place each input at its path."""
    for folder in plan.folders():
        host_path(files_dir, folder).mkdir(parents=True, exist_ok=True)
    records = []
    for i, item in enumerate(plan.inputs):
        target = host_path(files_dir, item.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if item.content is not None:
            target.write_text(item.content, encoding="utf-8")
            continue
        if item.url is not None:
            records.append(_read_url(i, item, target, plan, store))
            continue
        if item.key is None:
            why = item.why or "it is not in the job store"
            raise TaskSystemError(f"inputs[{i}]: {item.foreign_url!r} cannot be read: {why}")
        temp = work / "staging" / str(i)
        try:
            files = store.download(item.key, temp)
        except MissingKeyError:
            raise TaskSystemError(f"inputs[{i}]: no such file in the job store: {item.key}") from None
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # a mount root made empty above, now the input folder itself
        (temp / last_name(item.key)).rename(target)
        records.append(InputRecord(kind="data_ids", key=item.key, staged_at=item.path, files=files))
    return records


def _read_url(i: int, item: InputPlan, target: Path, plan: TesPlan, store: JobStore) -> InputRecord:
    """Read an allowed URL outside the job store: an http(s) file, or an object (or folder of
    objects) of another bucket, with the job store's credentials when the scheme is its own."""
    assert item.url is not None
    try:
        if is_object_url(item.url):
            scheme = item.url.split("://", 1)[0]
            same = scheme in (store.fs.protocol if isinstance(store.fs.protocol, tuple) else (store.fs.protocol,))
            options = dict(getattr(store.fs, "storage_options", {}) or {}) if same else {}
            got = fetch_object(item.url, target, item.type, plan.url_policy, options)
        else:
            got = [("", fetch_url(item.url, target, plan.url_policy))]
    except (UrlFetchError, ObjectFetchError) as exc:
        raise TaskSystemError(f"inputs[{i}]: {exc}") from None
    files = [FileRecord(key=f"{item.url.rstrip('/')}/{rel}" if rel else item.url, size=f.size, sha256=f.sha256) for rel, f in got]
    return InputRecord(kind="data_ids", key=item.url, staged_at=item.path, files=files)


@task(name="run-container", cache_policy=NONE, retries=0)
def run_executor(spec_kwargs: dict[str, Any], container_log: Path) -> dict[str, Any]:
    """Run one executor's container to its end; its output goes to the run's logs and container.log."""
    logger = get_run_logger()
    spec = TesContainerSpec(**spec_kwargs)
    with open(container_log, "a", encoding="utf-8") as log_file:

        def on_line(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()
            logger.info(line)

        with pool_slot():
            outcome = run_container(docker_client(), spec, on_line, on_start=lambda cid: logger.info("container %s started", cid[:12]))
    return {
        "exit_code": outcome.exit_code if outcome.exit_code is not None else -1,
        "timed_out": outcome.timed_out,
        "cancelled": outcome.cancelled,
        "started_at": outcome.started_at,
        "ended_at": outcome.ended_at,
        "tail": "\n".join(outcome.tail)[-STDOUT_TAIL_CHARS:],
    }


def pattern_matches(files_dir: Path, item: OutputPlan) -> list[tuple[str, Path]]:
    """The container paths (with their host paths) that wildcard output ``item`` matches, of
    its type, sorted. A match reached through a link is never taken: an executor could point
    one at the host's own files."""
    found = []
    for rel in sorted(glob.glob(item.path.lstrip("/"), root_dir=files_dir)):
        local = files_dir / rel
        if any((files_dir / Path(*Path(rel).parts[:n])).is_symlink() for n in range(1, len(Path(rel).parts) + 1)):
            continue
        if local.is_file() if item.type == "FILE" else local.is_dir():
            found.append(("/" + rel, local))
    return found


def _upload_one(
    store: JobStore, local: Path, key: str, url: str, path: str, kind: str
) -> tuple[list[OutputRecord], list[OutputFileRecord]]:
    """Upload a file to ``key``, or a folder's files under it; their records and TES file logs."""
    if kind == "FILE":
        rec = store.upload_file(local, key)
        return [OutputRecord(kind="output", **rec.model_dump())], [OutputFileRecord(url=url, path=path, size_bytes=str(rec.size))]
    out, logs = [], []
    for rec in store.upload_tree(local, key, skipped=[]):
        rel = rec.key[len(key) + 1 :]
        out.append(OutputRecord(kind="output", **rec.model_dump()))
        logs.append(OutputFileRecord(url=f"{url.rstrip('/')}/{rel}", path=f"{path}/{rel}", size_bytes=str(rec.size)))
    return out, logs


@task(name="upload-outputs", cache_policy=NONE, retries=0)
def upload_task_outputs(
    store: JobStore, plan: TesPlan, files_dir: Path
) -> tuple[list[OutputRecord], list[OutputFileRecord], list[str], list[str]]:
    """Upload each output (links never followed). Returns the records, the TES file logs, the
    outputs that were not written (the caller judges them) and notes for the task's
    system_logs (a pattern that matched nothing: not an error, as other TES servers treat it)."""
    out: list[OutputRecord] = []
    logs: list[OutputFileRecord] = []
    missing: list[str] = []
    notes: list[str] = []
    for i, item in enumerate(plan.outputs):
        if item.is_pattern:
            matches = pattern_matches(files_dir, item)
            if not matches:
                notes.append(f"outputs[{i}]: nothing matched {item.path} ({item.type})")
            for path, local in matches:
                pruned = path[len(item.path_prefix or "") :].lstrip("/") or local.name
                try:
                    key = check_key(join_key(item.key, pruned))
                except UserError:
                    missing.append(f"outputs[{i}]: {path} matched {item.path} but cannot be a job-store key")
                    continue
                got = _upload_one(store, local, key, f"{item.url.rstrip('/')}/{pruned}", path, item.type)
                out += got[0]
                logs += got[1]
            continue
        local = host_path(files_dir, item.path)
        wanted = local.is_file() if item.type == "FILE" else local.is_dir()
        if wanted and not local.is_symlink():
            got = _upload_one(store, local, item.key, item.url, item.path, item.type)
            out += got[0]
            logs += got[1]
        else:
            missing.append(f"outputs[{i}]: {item.path} ({item.type}) was not written")
    return out, logs, missing, notes


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def run_task(plan: TesPlan, store: JobStore, job_id: str, work: Path, files_dir: Path) -> Any:
    """Stage, run the executors in order, upload; write the log, manifest and run log. Returns
    the manifest (COMPLETE) or the final state: Failed named ExecutorError, Failed, Cancelled."""
    logger = get_run_logger()
    started = datetime.now(UTC)
    timings = Timings()
    container_log = work / "container.log"
    container_log.parent.mkdir(parents=True, exist_ok=True)
    executors: list[ExecutorRecord] = []
    inputs: list[InputRecord] = []
    outputs: list[OutputRecord] = []
    files: list[OutputFileRecord] = []
    system_logs: list[str] = []
    outcome, exit_code, executor_failed = "COMPLETE", None, False
    try:
        check_free_disk(work, plan.disk_gb)
        t = time.perf_counter()
        inputs = stage_task_inputs(store, plan, files_dir, work)
        timings.staging_s = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        for index, ex in enumerate(plan.executors):
            spec = executor_spec(plan, index, files_dir, job_id)
            # Named for the executor, so the run's task list in the UI reads as the TES task does.
            result = run_executor.with_options(task_run_name=f"executor-{index}")(spec.model_dump(), container_log)
            executors.append(
                ExecutorRecord(
                    start_time=_iso(result["started_at"]),
                    end_time=_iso(result["ended_at"]),
                    exit_code=result["exit_code"],
                    stdout=result["tail"],
                )
            )
            exit_code = result["exit_code"]
            if result["cancelled"]:
                raise JobCancelled("the task was cancelled while an executor ran; its container was stopped")
            if result["timed_out"]:
                raise TaskSystemError(f"executor {index} ran past backend_parameters.timeout_s ({plan.timeout_s} s) and was stopped")
            if exit_code != 0 and not ex.ignore_error:
                executor_failed = True
                outcome = "EXECUTOR_ERROR"
                system_logs.append(f"executor {index} ({ex.image}) exited with code {exit_code}")
                break
        timings.container_s = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        outputs, files, missing, notes = upload_task_outputs(store, plan, files_dir)
        timings.upload_s = round(time.perf_counter() - t, 3)
        system_logs += missing + notes
        if missing and not executor_failed:  # TES: COMPLETE means every output was uploaded
            outcome = "SYSTEM_ERROR"
    except JobCancelled as exc:
        if isinstance(exc, AttemptOver):
            raise
        outcome = "CANCELED"
        system_logs.append(str(exc))
    except JobCloudError as exc:  # staging, the engine, the store: not the executors' fault
        outcome = "SYSTEM_ERROR"
        system_logs.append(str(exc))
    if container_log.exists():
        rec = store.upload_file(container_log, join_key(job_prefix(job_id), "log", "container.log"))
        outputs.append(OutputRecord(kind="log", **rec.model_dump()))
    if not get_settings().keep_workdir:
        shutil.rmtree(work, ignore_errors=True)
    finished = datetime.now(UTC)
    timings.total_s = round((finished - started).total_seconds(), 3)
    message = "; ".join(system_logs) or None
    first = plan.executors[0]
    manifest = JobManifest(
        job_id=job_id,
        application=TES_APPLICATION,
        version=TES_VERSION,
        entrypoint=TES_ENTRYPOINT,
        image=first.image,
        command=list(first.command),
        env_names=sorted({k for ex in plan.executors for k in ex.env}),
        hardware={"cpu": plan.cpu, "memory_mb": plan.memory_mb, "disk_gb": plan.disk_gb, "gpu": plan.gpu, "timeout_s": plan.timeout_s},
        definition="tes",
        state={"COMPLETE": "Completed", "CANCELED": "Cancelled"}.get(outcome, "Failed"),
        message=message,
        exit_code=exit_code,
        attempts=len(executors),
        inputs=inputs,
        outputs=outputs,
        timings=timings,
        started_at=started,
        finished_at=finished,
    )
    record = TesRunLog(
        outcome=outcome,
        start_time=started.isoformat(),
        end_time=finished.isoformat(),
        executors=executors,
        outputs=files,
        system_logs=system_logs,
    )
    store.write_bytes(run_log_key(job_id), record.model_dump_json(indent=2).encode())
    # Written last: a task's outputs never look complete before they are.
    store.write_bytes(join_key(job_prefix(job_id), "manifest.json"), manifest.model_dump_json(indent=2).encode())
    if outcome == "COMPLETE":
        return manifest.model_dump(mode="json")
    logger.warning("%s: %s", outcome, message)
    if outcome == "CANCELED":
        return Cancelled(message=message)
    return Failed(name=EXECUTOR_ERROR_STATE if outcome == "EXECUTOR_ERROR" else "Failed", message=message)


def _start_guard(plan: TesPlan, job_id: str, work: Path) -> JobGuard:
    """The job's guard (job_guard.py): it cleans up if this process dies."""
    settings = get_settings()
    skeleton = {
        "job_id": job_id,
        "application": TES_APPLICATION,
        "version": TES_VERSION,
        "entrypoint": TES_ENTRYPOINT,
        "image": plan.executors[0].image,
        "command": list(plan.executors[0].command),
        "env_names": [],
        "started_at": datetime.now(UTC).isoformat(),
    }
    guard_plan = {
        "job_id": job_id,
        "work": str(work),
        "keep_work": settings.keep_workdir,
        "container_log": str(work / "container.log"),
        "log_dir": None,
        "manifest": skeleton,
        "engine": True,
    }
    mark_work_folder(work, owning_api())
    return JobGuard.start(guard_plan, settings.home / "logs" / "job_guard.log")


@flow(name=TES_FLOW_NAME, persist_result=False, validate_parameters=True)
def tes_task(task: dict[str, Any], plan: dict[str, Any]) -> Any:
    """Run one GA4GH TES task.

    Args:
        task: The TES task document as the client sent it (what GET /tasks/{id} answers).
        plan: What runs: executors, inputs and outputs as job-store keys, mounts, hardware.
    """
    checked = TesPlan.model_validate(plan)
    job_id = str(runtime_flow_run.id)
    work, files_dir = job_folders(job_id)
    files_dir.mkdir(parents=True, exist_ok=True)
    guard = _start_guard(checked, job_id, work)
    try:
        with guard.active(), watch_for_cancel(job_id), tracking_left_containers() as left:
            result = run_task(checked, store_from_settings(), job_id, work, files_dir)
    except AttemptOver as exc:
        guard.finish("left" if left else "done")
        raise Abort(str(exc)) from None
    except BaseException:
        guard.finish("error")
        raise
    guard.finish("left" if left else "done")
    return result

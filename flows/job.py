"""The job flow: stage-inputs -> run-container -> upload-outputs, then the manifest.

`make_flow` builds one Prefect flow per catalog entrypoint, named `<application>-<entrypoint>`,
whose parameters are the job parameters (`jobcloud.flows.request.JobRequest`).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import Flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.exceptions import Abort
from prefect.runtime import flow_run as runtime_flow_run
from prefect.runtime import task_run as runtime_task_run
from prefect.states import Cancelled, Completed, Failed, State

from jobcloud.blocks.engine import docker_client, engine_url
from jobcloud.blocks.errors import ContainerFailed, JobCloudError
from jobcloud.blocks.keys import join_key, last_name
from jobcloud.blocks.settings import get_settings
from jobcloud.blocks.store.factory import store_from_settings
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.flows.array_request import ARRAY_DESCRIPTION, ArrayRequest, array_parameter
from jobcloud.flows.cache import CacheLookup, lookup, remember, reuse_outputs
from jobcloud.flows.cancel_watch import (
    AttemptOver,
    JobCancelled,
    confirm_run_on_server,
    current_flag,
    raise_if_attempt_over,
    watch_for_cancel,
)
from jobcloud.flows.catalog import Entrypoint, EntrypointRef
from jobcloud.flows.container_run import PRESENT_ATTR, run_container
from jobcloud.flows.container_spec import (
    ELEMENT_LABEL,
    JOB_LABEL,
    LABEL_PREFIX,
    ContainerSpec,
    build_spec,
    gpu_checked_command,
    image_for,
    job_gpus,
    owning_api,
    shell_command,
)
from jobcloud.flows.definition import Definition, definition_of
from jobcloud.flows.job_events import JobReporter
from jobcloud.flows.job_guard import JobGuard, keep_logs, tracking_left_containers
from jobcloud.flows.manifest import (
    InputRecord,
    JobEnded,
    JobManifest,
    OutputRecord,
    Timings,
    human_size,
    job_prefix,
)
from jobcloud.flows.output_images import prefect_key, publish_images
from jobcloud.flows.pool_slots import pool_slot
from jobcloud.flows.process_run import run_process
from jobcloud.flows.progress import TransferProgress
from jobcloud.flows.request import (
    CheckedRequest,
    JobRequest,
    check_request,
    flow_signature,
    parameter_descriptions,
    request_from_parameters,
    secret_blocks,
)
from jobcloud.flows.retries import RetryPolicy, empty_folders, folders_to_empty
from jobcloud.flows.secrets import load_secret_values, masker
from jobcloud.flows.sweeper import mark_work_folder

StoreFactory = Callable[[], JobStore]


# No Prefect retries for the transfer tasks: the store retries each file itself (the one retry
# layer, jobcloud.blocks.transfer.base.ATTEMPTS); a task retry would multiply that budget.
@task(name="stage-inputs", cache_policy=NONE, retries=0)
def stage_inputs(store: JobStore, entry: Entrypoint, request: JobRequest, files_dir: Path) -> list[InputRecord]:
    """Copy every input key under its files_down folder, keeping its last name."""
    logger = get_run_logger()
    down, up = entry.handler.files_down, entry.handler.files_up
    # Output folders exist from the start, so an app can write into them directly.
    for folder in (down.config_id, down.data_ids, down.artifact_ids, up.output, up.log, up.artifact):
        if folder:
            (files_dir / folder).mkdir(parents=True, exist_ok=True)
    inputs = request.inputs()  # each exists: `check_request` saw to it before the job started
    total = sum(size for _, key in inputs for _, size in store.files(key))
    progress = TransferProgress("Staging inputs", total)
    records: list[InputRecord] = []
    for kind, key in inputs:
        folder = getattr(down, kind)
        files = store.download(key, files_dir / folder, progress.advance)
        staged_at = f"/files/{folder}/{last_name(key)}"
        logger.info("staged %s (%s, %s) at %s", key, _files(len(files)), human_size(sum(f.size for f in files)), staged_at)
        records.append(InputRecord(kind=kind, key=key, staged_at=staged_at, files=files))
    progress.done()
    return records


@task(name="run-container", cache_policy=NONE)
def run_container_step(
    spec_kwargs: dict[str, Any],
    container_log: Path,
    secrets: dict[str, str] | None = None,
    clear: list[str] | None = None,
    max_attempts: int = 1,
    on_start: Callable[[str], None] | None = None,
) -> dict[str, Any] | State:
    """Run the app's command; its output goes to the flow run's logs and container.log.

    Host mode (`JOBCLOUD_RUNNER=engine`) runs the app's container through the engine;
    in-container mode (`process`) runs the command as a subprocess of this flow, which runs
    inside the app's image. The same spec, outcome and failure rules either way.

    Returns a Failed state on a non-zero exit or a timeout. ``secrets`` names the Secret block
    of each secret variable: values are loaded here, so no task parameter ever holds one, and
    are masked in every line of output. On a retry (Prefect's, see `RetryPolicy`) the
    ``clear`` folders are emptied and container.log starts again.
    """
    attempt = max(1, runtime_task_run.run_count)
    return run_command_attempt(spec_kwargs, container_log, secrets, clear, max_attempts, on_start, attempt)


def run_command_attempt(
    spec_kwargs: dict[str, Any],
    container_log: Path,
    secrets: dict[str, str] | None,
    clear: list[str] | None,
    max_attempts: int,
    on_start: Callable[[str], None] | None,
    attempt: int,
    engine: Any = None,
) -> dict[str, Any] | State:
    """One attempt of the app's command (the body of `run_container_step`, which an array's
    element calls directly, attempt by attempt, inside its own task run). ``engine``: a client
    to reuse (an element thread's); by default a new one."""
    logger = get_run_logger()
    spec = ContainerSpec(**spec_kwargs)
    values = load_secret_values(secrets or {})
    spec = spec.model_copy(update={"secret_environment": values})
    mask = masker([v.get_secret_value() for v in values.values()])
    if attempt > 1:
        confirm_run_on_server()  # a retry never starts for a run the server already ended
        empty_folders(Path(spec.host_files), clear or [])
    in_container = get_settings().runner == "process"
    client = None if in_container else engine or docker_client()
    container_log.parent.mkdir(parents=True, exist_ok=True)
    with open(container_log, "w", encoding="utf-8") as log_file:

        def on_line(line: str) -> None:
            line = mask(line)
            log_file.write(line + "\n")
            log_file.flush()
            logger.info(line)

        def started(line: str, what: str) -> None:
            logger.info(line)
            if on_start is not None:
                on_start(what)  # the job's reporter: event container-started, callback update

        if attempt > 1:
            on_line(f"[jobcloud] attempt {attempt} of {max_attempts}; the earlier attempt's outputs were removed")
        # One slot of the pool's limit while the command runs (flows/pool_slots.py).
        with pool_slot():
            if client is None:
                outcome = run_process(spec, on_line, on_start=lambda what: started(f"command started ({what})", what))
            else:
                outcome = run_container(client, spec, on_line, on_start=lambda cid: started(f"container {cid[:12]} started", cid[:12]))
    result = {
        "image_id": outcome.image_id,
        "exit_code": outcome.exit_code,
        "timed_out": outcome.timed_out,
        "cancelled": outcome.cancelled,
        "seconds": round(outcome.ended_at - outcome.started_at, 3),
        "started_at": outcome.started_at,
        "ended_at": outcome.ended_at,
    }
    if outcome.cancelled:
        return result  # not the app's failure: the job ends Cancelled (run_job)
    if not outcome.ok:
        # A Failed state, not an exception: the app's failure is no JobCloud traceback. Its
        # message is the one line Prefect logs as `Finished in state Failed('...')`; the last
        # lines go in the data, and the flow logs them once, as lines (run_job).
        tail = [mask(line) for line in outcome.tail]
        head = str(ContainerFailed(outcome.exit_code, [], outcome.timed_out))
        return Failed(message=head, data={**result, "tail": tail})
    return result


@task(name="upload-outputs", cache_policy=NONE, retries=0)  # retries: see stage-inputs
def upload_outputs(
    store: JobStore, entry: Entrypoint, job_id: str, files_dir: Path, container_log: Path
) -> tuple[list[OutputRecord], list[str]]:
    """Upload each files_up folder to jobs/<id>/<kind>/, never following links."""
    logger = get_run_logger()
    prefix = job_prefix(job_id)
    up = entry.handler.files_up
    folders = {kind: getattr(up, kind) for kind in ("output", "log", "artifact")}
    present = {k: files_dir / f for k, f in folders.items() if f and (files_dir / f).exists()}
    total = sum(f.stat().st_size for d in present.values() for f in d.rglob("*") if f.is_file() and not f.is_symlink())
    progress = TransferProgress("Uploading outputs", total)
    records: list[OutputRecord] = []
    skipped: list[str] = []
    for kind, local in present.items():
        kind_skipped: list[str] = []
        uploaded = store.upload_tree(local, join_key(prefix, kind), progress.advance, kind_skipped)
        records += [OutputRecord(kind=kind, **rec.model_dump()) for rec in uploaded]
        skipped += [f"{folders[kind]}/{s}" for s in kind_skipped]
        where = f"{join_key(prefix, kind)}/"
        if uploaded:
            size = sum(r.size for r in uploaded)
            logger.info("uploaded /files/%s/: %s, %s -> %s", folders[kind], _files(len(uploaded)), human_size(size), where)
        else:
            logger.info("/files/%s/ is empty: nothing uploaded to %s", folders[kind], where)
        if kind_skipped:
            logger.warning(
                "not uploaded from /files/%s/ (links or special files, never followed): %s",
                folders[kind],
                ", ".join(kind_skipped),
            )
    if container_log.exists():
        rec = store.upload_file(container_log, join_key(prefix, "log", "container.log"))
        if any(r.key == rec.key for r in records):
            logger.warning("the app's own /files/%s/container.log was replaced by the container's output", folders["log"])
        records = [r for r in records if r.key != rec.key]  # each key once: the last upload wins
        records.append(OutputRecord(kind="log", **rec.model_dump()))
        logger.info("uploaded the container's output: %s -> %s", human_size(rec.size), rec.key)
    progress.done()
    return records, skipped


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


@dataclass
class JobContext:
    """One job as it runs: what it is, where its files are, and how it went so far.

    Each phase of `run_job` reads and fills this one object; `write_manifest` turns it into the
    manifest, `end_state` into the flow's final state.
    """

    ref: EntrypointRef
    entry: Entrypoint
    request: CheckedRequest
    store: JobStore
    job_id: str
    logger: Any
    reporter: JobReporter  # events and the callback
    secrets: dict[str, str]  # secret variable -> its Secret block
    spec: ContainerSpec
    container_retries: RetryPolicy
    definition: Definition
    work: Path
    files_dir: Path
    # The flow run the job runs in: its containers' label and its work folder's owner. The same
    # as job_id, except for an element of an array (job_id `<array id>/<index>`).
    run_id: str = ""
    # An array's element runs inside its own task run: its phases are plain calls, not task runs.
    lean: bool = False
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    timings: Timings = field(default_factory=Timings)
    cached: CacheLookup = field(default_factory=CacheLookup)
    image_id: str | None = None
    inputs: list[InputRecord] = field(default_factory=list)
    outputs: list[OutputRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    exit_code: int | None = None
    timed_out: bool = False
    cancelled: bool = False
    attempts: int = 0  # times the container started; 0 when it never ran (or outputs were reused)
    failure: str | None = None  # what went wrong, for the log and the manifest (may span lines)
    summary: str | None = None  # the same on one line, for the final state's message

    @property
    def container_log(self) -> Path:
        return self.work / "container.log"


def prepare(
    ref: EntrypointRef,
    entry: Entrypoint,
    request: JobRequest,
    store: JobStore,
    element: tuple[str, int] | None = None,
) -> JobContext:
    """Check the request (unless the submit side did: a `CheckedRequest`) and plan the job.

    ``element``: (array id, index) for an element of an array: its files live under
    jobs/<array id>/<index>/, its work folder under the run's, its container carries the run's
    label (so the run's guard and the sweeper find it) and the element's index.

    Raises before anything starts on bad input (`check_request`): no folder, no manifest.
    """
    started = datetime.now(UTC)
    logger = get_run_logger()
    run_id = str(runtime_flow_run.id)
    definition = definition_of(ref, entry)
    checked = check_request(entry, request, store)
    if element is None:
        job_id = run_id
        work, files_dir = job_folders(job_id)
    else:
        job_id = f"{element[0]}/{element[1]}"
        work, files_dir = element_folders(run_id, element[1])
    spec = build_spec(ref, entry, checked, files_dir, job_id)
    if element is not None:
        spec.labels.update({JOB_LABEL: run_id, f"{LABEL_PREFIX}.flow-run-id": run_id, ELEMENT_LABEL: str(element[1])})
    return JobContext(
        ref=ref,
        entry=entry,
        request=checked,
        store=store,
        job_id=job_id,
        logger=logger,
        reporter=JobReporter(ref, job_id, checked.callback_url, logger, run_id=run_id, phase_events=element is None),
        secrets=secret_blocks(entry, checked),
        spec=spec,
        container_retries=RetryPolicy(entry.hardware.retries, entry.hardware.retry_delay_s),
        definition=definition,
        work=work,
        files_dir=files_dir,
        run_id=run_id,
        lean=element is not None,
        started=started,
    )


def stage(ctx: JobContext) -> None:
    """The stage-inputs task: every input under its files_down folder."""
    ctx.files_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    try:
        staging = stage_inputs.fn if ctx.lean else stage_inputs
        ctx.inputs = staging(ctx.store, ctx.entry, ctx.request, ctx.files_dir)  # no Prefect retries: see the task
        ctx.reporter.phase("inputs-staged", inputs=[r.key for r in ctx.inputs])
    finally:
        ctx.timings.staging_s = round(time.perf_counter() - t, 3)


def reuse(ctx: JobContext) -> bool:
    """Take an earlier job's outputs where the catalog says `cache: true` and one ran the same
    image, command, env and inputs; whether it did (then the container does not run)."""
    ctx.cached = lookup(ctx.store, ctx.entry, ctx.spec, ctx.inputs)
    earlier = ctx.cached.earlier
    if earlier is None:
        return False
    ctx.outputs, ctx.skipped = reuse_outputs(ctx.store, earlier, ctx.job_id), list(earlier.skipped)
    ctx.exit_code = earlier.exit_code
    ctx.logger.info("reused the outputs of job %s (same image, command, env and inputs); the container did not run", earlier.job_id)
    ctx.reporter.phase("reused", reused_from=earlier.job_id, exit_code=ctx.exit_code)
    return True


def run_command(ctx: JobContext) -> None:
    """The run-container task (with its retries); records how the command ended.

    Raises `JobCancelled` when the job was cancelled while its command ran.
    """
    t = time.perf_counter()
    retries = ctx.container_retries
    args = (
        ctx.spec.model_dump(),
        ctx.container_log,
        ctx.secrets,
        folders_to_empty(ctx.entry),
        retries.max_attempts,
        lambda what: ctx.reporter.phase("container-started", started=what),
    )
    if ctx.lean:
        state = _attempts_in_place(retries, args)
    else:
        state = run_container_step.with_options(**retries.task_options())(*args, return_state=True)
    ctx.timings.container_s = round(time.perf_counter() - t, 3)
    ctx.attempts = retries.attempts
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, dict):
        ctx.exit_code, ctx.timed_out = outcome["exit_code"], outcome["timed_out"]
        ctx.reporter.phase("container-exited", exit_code=ctx.exit_code, timed_out=ctx.timed_out)
        ctx.image_id = outcome.get("image_id") or None
        if outcome.get("started_at"):
            ctx.timings.command_started_at = datetime.fromtimestamp(outcome["started_at"], UTC)
            ctx.timings.command_ended_at = datetime.fromtimestamp(outcome["ended_at"], UTC)
        if outcome.get("cancelled"):
            raise JobCancelled("the job was cancelled while its container ran; the container was stopped")
    if not state.is_completed() and isinstance(outcome, dict):  # the app failed
        tail = outcome.get("tail") or []
        ctx.failure = str(ContainerFailed(ctx.exit_code, tail, ctx.timed_out))
        ctx.summary = _with_last_lines(state.message or ctx.failure.splitlines()[0], tail)
    elif not state.is_completed():  # the engine failed under it (after its retries)
        ctx.failure = state.message or str(outcome)


def _attempts_in_place(retries: RetryPolicy, args: tuple[Any, ...]) -> State:
    """The command's attempts without a task run each (an array's element): the same retry
    rules (`RetryPolicy`), the same final state as `run_container_step` would end in."""
    attempt = 1
    while True:
        try:
            engine = None if get_settings().runner == "process" else thread_engine()
            outcome = run_command_attempt(*args, attempt=attempt, engine=engine)
            state = outcome if isinstance(outcome, State) else Completed(data=outcome)
        except JobCancelled:
            raise
        except Exception as exc:  # noqa: BLE001 - judged as run_container_step's failure would be
            _engines.client = None  # the next attempt connects (and pings) anew
            state = Failed(message=str(exc), data=exc)
        if state.is_completed():
            return state
        delay = retries.next_delay(state)
        if delay is None:
            return state
        attempt += 1
        if delay and _cancelled_within(delay):
            raise JobCancelled("the job was cancelled while it waited to retry its command")


_engines = threading.local()


def thread_engine() -> Any:
    """This thread's engine client, made (and pinged) once: an array's element thread runs many
    containers, and a new client per element costs a connection and a ping. It also remembers
    which images it saw present (`ensure_image`)."""
    url = engine_url()
    client = getattr(_engines, "client", None)
    if client is None or getattr(client, "jobcloud_url", None) != url:
        client = docker_client()
        setattr(client, PRESENT_ATTR, {})
        _engines.client = client
    return client


def _cancelled_within(seconds: float) -> bool:
    flag = current_flag()
    if flag is None:
        time.sleep(seconds)
        return False
    return flag.wait(seconds)


def collect(ctx: JobContext) -> None:
    """The upload-outputs task, also after a failure (the log matters most then)."""
    raise_if_attempt_over()
    t = time.perf_counter()
    try:
        uploading = upload_outputs.fn if ctx.lean else upload_outputs
        ctx.outputs, ctx.skipped = uploading(ctx.store, ctx.entry, ctx.job_id, ctx.files_dir, ctx.container_log)
        ctx.reporter.phase("outputs-uploaded", files=len(ctx.outputs), outputs=f"{job_prefix(ctx.job_id)}/")
    except JobCancelled:
        raise
    except JobCloudError as exc:
        ctx.failure = (ctx.failure + "\n" if ctx.failure else "") + f"uploading outputs failed: {exc}"
        ctx.summary = ctx.summary and f"{ctx.summary}; uploading outputs failed: {exc}"
    ctx.timings.upload_s = round(time.perf_counter() - t, 3)


def record_cancel(ctx: JobContext, exc: JobCancelled) -> None:
    """Record a cancel: what the job logged so far is kept as its outputs."""
    ctx.failure, ctx.cancelled = str(exc), True
    logs = keep_logs(ctx.store, ctx.job_id, ctx.container_log, log_dir(ctx.entry, ctx.files_dir))
    ctx.outputs = [OutputRecord(**r) for r in logs]


def write_manifest(ctx: JobContext) -> JobManifest:
    """The job's manifest, written last as jobs/<id>/manifest.json."""
    finished = datetime.now(UTC)
    ctx.timings.total_s = round((finished - ctx.started).total_seconds(), 3)
    spec, definition = ctx.spec, ctx.definition
    state = "Cancelled" if ctx.cancelled else "TimedOut" if ctx.timed_out else "Failed" if ctx.failure else "Completed"
    manifest = JobManifest(
        job_id=ctx.job_id,
        application=ctx.ref.application,
        version=ctx.ref.version,
        entrypoint=ctx.ref.entrypoint,
        image=spec.image,
        command=spec.command,
        env_names=sorted(ctx.request.env),
        secret_names=sorted(ctx.secrets),
        hardware={
            "cpu": spec.nano_cpus / 1e9 if spec.nano_cpus else None,
            "memory_mb": spec.mem_limit_bytes // (1024 * 1024) if spec.mem_limit_bytes else None,
            "gpu": spec.gpus,
            "timeout_s": spec.timeout,
        },
        image_id=ctx.image_id,
        runner=get_settings().runner,
        definition=definition.source,
        definition_sha256=definition.sha256,
        state=state,
        message=ctx.failure,
        exit_code=ctx.exit_code,
        timed_out=ctx.timed_out,
        attempts=ctx.attempts,
        reused_from=ctx.cached.earlier.job_id if ctx.cached.earlier else None,
        inputs=ctx.inputs,
        outputs=ctx.outputs,
        skipped=ctx.skipped,
        timings=ctx.timings,
        started_at=ctx.started,
        finished_at=finished,
    )
    # Written last: a job's outputs never look complete before they are.
    ctx.store.write_bytes(join_key(job_prefix(ctx.job_id), "manifest.json"), manifest.model_dump_json(indent=2).encode())
    return manifest


def publish(ctx: JobContext, manifest: JobManifest) -> None:
    """Tell everyone: the cache, the outputs table and pictures in the UI, the events and the
    callback (a bounded wait for its last updates)."""
    remember(ctx.store, ctx.cached, manifest)
    if not ctx.lean:  # an array's element: its array's table says it all, once
        _outputs_artifact(manifest)
        publish_images(ctx.store, manifest)  # pictures among the outputs (a loss curve) in the UI
    ctx.reporter.final(manifest)
    ctx.reporter.close()


def end_state(ctx: JobContext, manifest: JobManifest) -> JobManifest | State:
    """The flow's result: the manifest, or a Failed (TimedOut) / Cancelled state that carries it.

    The failure once in the log, its lines as lines; the final state's message is one line, as
    Prefect logs it in `Finished in state ...('...')` (where a newline shows as a literal \\n).
    Its data is a `JobEnded`, the exception Prefect raises where it asks for the result (a
    worker does), with the manifest attached.
    """
    if not ctx.failure:
        return manifest
    message = _one_line(ctx.summary or ctx.failure)
    data = JobEnded(message, manifest.model_dump(mode="json"))
    if ctx.cancelled:
        ctx.logger.warning(ctx.failure)
        return Cancelled(message=message, data=data)
    ctx.logger.error(ctx.failure)
    # "TimedOut" is how Prefect names its own timeout states (a Failed type: status error).
    return Failed(name=manifest.state, message=message, data=data)


def run_job(
    ref: EntrypointRef,
    entry: Entrypoint,
    request: JobRequest,
    store: JobStore,
    element: tuple[str, int] | None = None,
) -> JobManifest | State:
    """The body of every job flow, in phases over one `JobContext`: prepare, stage inputs, run
    the command (or reuse an earlier job's outputs), collect outputs, write the manifest,
    publish, end. Returns the manifest, or a Failed/Cancelled state carrying it.

    ``element``: (array id, index) when this job is an element of an array (`prepare`)."""
    ctx = prepare(ref, entry, request, store, element)
    try:
        stage(ctx)
        if not reuse(ctx):
            run_command(ctx)
            collect(ctx)
    except JobCancelled as exc:
        if isinstance(exc, AttemptOver) or _attempt_over():
            _discard(ctx)
            raise AttemptOver(str(exc)) from None
        record_cancel(ctx, exc)
    except JobCloudError as exc:
        ctx.failure = str(exc)
    if _attempt_over():  # nothing of this attempt may land over what the server decided since
        _discard(ctx)
        raise AttemptOver(current_flag().message)
    # Not in a `finally`: when anything else escapes (SIGTERM of a cancel, a crash), the job's
    # guard uploads the container log so far and then removes the folder.
    if not get_settings().keep_workdir:
        shutil.rmtree(ctx.work, ignore_errors=True)
    manifest = write_manifest(ctx)
    publish(ctx, manifest)
    return end_state(ctx, manifest)


def _attempt_over() -> bool:
    flag = current_flag()
    return flag is not None and flag.attempt_over


def _discard(ctx: JobContext) -> None:
    """What an attempt that is over leaves: its work folder goes, the store is not touched."""
    ctx.logger.warning("%s", current_flag().message)
    shutil.rmtree(ctx.work, ignore_errors=True)


# At most this many of the last lines (each cut to LINE_MAX characters) in a final state's
# message; the log line of the failure and the manifest keep all of them (up to TAIL_LINES).
STATE_TAIL_LINES = 5
LINE_MAX = 200


def _one_line(text: str) -> str:
    """``text``'s non-blank lines joined with " | "."""
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def _with_last_lines(head: str, tail: list[str]) -> str:
    """``head`` and the last few lines of output, on one line."""
    last = [line if len(line) <= LINE_MAX else line[:LINE_MAX] + "..." for line in tail[-STATE_TAIL_LINES:]]
    shown = _one_line("\n".join(last))
    return f"{head}; last lines: {shown}" if shown else head


def _outputs_artifact(manifest: JobManifest) -> None:
    """The table of the job's files, keyed `<app>-<entrypoint>-outputs` (so the Artifacts page
    lists it, the latest job's on top of the earlier ones)."""
    rows = outputs_table(manifest)
    total = human_size(sum(r["bytes"] for r in rows))
    create_table_artifact(
        key=outputs_key(manifest),
        table=rows or [{"kind": "-", "file": "(no outputs)", "size": "", "bytes": 0, "sha256": ""}],
        description=(
            f"Outputs of job `{manifest.job_id}` ({manifest.state}): {_files(len(rows))}, {total} "
            f"under `{manifest.prefix}/`. Download: `jobcloud jobs outputs {manifest.job_id} DIR`."
        ),
    )


def outputs_key(manifest: JobManifest) -> str:
    """The outputs table's artifact key: <app>-<entrypoint>-outputs, as Prefect allows keys."""
    return prefect_key(manifest.application, manifest.entrypoint, "outputs")


def outputs_table(manifest: JobManifest) -> list[dict[str, Any]]:
    """One row per file of the job (a key listed twice keeps its last record, the one the store
    holds): its kind, path under jobs/<id>/, size for people and in bytes, full SHA-256."""
    latest = {o.key: o for o in manifest.outputs}
    start = f"{manifest.prefix}/"
    return [
        {
            "kind": o.kind,
            "file": o.key.removeprefix(start),
            "size": human_size(o.size),
            "bytes": o.size,
            "sha256": o.sha256,
        }
        for o in latest.values()
    ]


def job_folders(job_id: str) -> tuple[Path, Path]:
    """The job's work folder (its container.log) and the folder staged as /files.

    Host mode: both on the worker host, /files bind-mounted from `<work>/files`. In-container
    mode: /files itself (`JOBCLOUD_FILES_DIR`), the paths the catalog's commands name.
    """
    settings = get_settings()
    work = settings.work_root / job_id
    files_dir = settings.files_dir if settings.runner == "process" else work / "files"
    return work, files_dir


def element_folders(run_id: str, index: int) -> tuple[Path, Path]:
    """An array element's work folder (under its run's, which the run's guard removes) and the
    folder staged as its /files. In-container mode has one /files: elements run there one by one."""
    settings = get_settings()
    work = settings.work_root / run_id / str(index)
    files_dir = settings.files_dir if settings.runner == "process" else work / "files"
    return work, files_dir


def log_dir(entry: Entrypoint, files_dir: Path) -> Path | None:
    """The job's files_up log folder on this host, if the entrypoint has one."""
    folder = entry.handler.files_up.log
    return files_dir / folder if folder else None


def start_guard(ref: EntrypointRef, entry: Entrypoint, request: JobRequest) -> JobGuard:
    """Start the process that cleans up after this job if its own process dies (job_guard.py)."""
    job_id = str(runtime_flow_run.id)
    settings = get_settings()
    work, files_dir = job_folders(job_id)
    logs = log_dir(entry, files_dir)
    skeleton = {
        "job_id": job_id,
        "application": ref.application,
        "version": ref.version,
        "entrypoint": ref.entrypoint,
        "image": image_for(entry, job_gpus(entry, request)),
        "command": gpu_checked_command(shell_command(entry), job_gpus(entry, request)),
        "env_names": sorted(request.env),
        "started_at": datetime.now(UTC).isoformat(),
    }
    plan = {
        "job_id": job_id,
        "work": str(work),
        "keep_work": settings.keep_workdir,
        "container_log": str(work / "container.log"),
        "log_dir": str(logs) if logs else None,
        "manifest": skeleton,
        "engine": settings.runner == "engine",
    }
    mark_work_folder(work, owning_api())
    return JobGuard.start(plan, settings.home / "logs" / "job_guard.log")


def make_flow(
    ref: EntrypointRef,
    entry: Entrypoint,
    store_factory: StoreFactory = store_from_settings,
    checked: CheckedRequest | None = None,
) -> Flow:
    """The Prefect flow of one catalog entrypoint.

    Its parameters are only those the entrypoint takes (`jobcloud.flows.request.flow_signature`, set as
    the function's `__signature__`): Prefect's parameter schema, hence the run form, the
    deployment's schema and the binding of `--param` names, all follow it.

    ``checked``: the request the caller already checked (`check_request`) and calls this flow
    with, in this process (`jobcloud run --local`): the job runs it without checking it again.
    Otherwise (a deployment's run) the job checks the request its parameters make.
    """

    def job(**parameters: Any) -> Any:
        array = _array_of(parameters.pop("array", None))
        request = checked if checked is not None else request_from_parameters(entry, parameters)
        guard = start_guard(ref, entry, request)
        try:
            with guard.active(), watch_for_cancel(str(runtime_flow_run.id)), tracking_left_containers() as left:
                if array is not None:
                    from jobcloud.flows.array_run import run_array  # it builds on this module

                    result = run_array(ref, entry, request, array, store_factory())
                else:
                    result = run_job(ref, entry, request, store_factory())
        except AttemptOver as exc:
            # The server ended the run (or cannot be reached): its state stands. Abort ends the
            # flow run's process without proposing a state; the guard has nothing to keep.
            guard.finish("left" if left else "done")
            raise Abort(str(exc)) from None
        except BaseException:
            guard.finish("error")
            raise
        guard.finish("left" if left else "done")
        return result.model_dump(mode="json") if isinstance(result, JobManifest) else result

    signature = flow_signature(entry)
    job.__signature__ = signature.replace(parameters=[*signature.parameters.values(), array_parameter()])  # type: ignore[attr-defined]
    job.__doc__ = _flow_doc(ref, entry)
    return Flow(
        fn=job,
        name=ref.flow_name,
        description=entry.description or f"{ref} in {entry.handler.image_url}",
        version=ref.version,
        validate_parameters=True,
        persist_result=False,
        # "torchfit/v1/train 1f2e3d4c" in the runs list says more than Prefect's "fresh-bumblebee".
        flow_run_name=lambda: f"{ref} {str(runtime_flow_run.id)[:8]}",
    )


def _array_of(value: Any) -> ArrayRequest | None:
    """The flow's `array` parameter, or None for one job (no array, or one with no rows)."""
    if value is None:
        return None
    array = value if isinstance(value, ArrayRequest) else ArrayRequest.model_validate(value)
    return array if array.elements else None


def _flow_doc(ref: EntrypointRef, entry: Entrypoint) -> str:
    # Prefect reads each parameter's description in the form from this docstring's Args.
    texts = {**parameter_descriptions(entry), "array": ARRAY_DESCRIPTION}
    args = "".join(f"\n        {name}: {text}" for name, text in texts.items())
    return f"""Run {ref} ({entry.handler.image_url}).

    Args:{args}
    """

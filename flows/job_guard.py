"""A job's guard: a small process that outlives the job's own process and cleans up after it.

`run_job` starts one guard per job (`python -m jobcloud.flows.job_guard`), in its own session so that
stopping the job's process group does not stop it, with a pipe from the job's process on its
stdin. The job writes one JSON line (what to clean) and, when it ends normally, `done`.

- `pgid N` (any number of lines, before the last word): the job runs its command as a
  subprocess in process group N (in-container mode); the guard kills that group when the job
  did not end cleanly.
- `done`: the job cleaned up itself. The guard looks once for a container with the job's label
  and exits.
- `left`: the job ended but could not remove its container (the engine went away): the guard
  removes it once the engine answers again.
- `error`: the job's process lives on but the job body raised; Prefect sets the run's state.
  The guard removes what is left (container, work folder), keeps the log, writes the manifest.
- end of file with no word: the job's process died (SIGKILL, OOM killer, a lost worker). The
  guard does all of the above and also ends the run: `Cancelled` if someone was cancelling it,
  else `Crashed`, so no run stays Running for ever.

Containers still present while the engine does not answer are retried for
`JOBCLOUD_GUARD_PATIENCE_S` seconds (default 600), then left to the sweeper.
The guard imports nothing heavy until it has work to do: a clean job costs one engine call.
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from jobcloud.blocks.errors import ContainerEngineError, UserError
from jobcloud.blocks.keys import join_key

DEFAULT_PATIENCE_S = 600.0  # also when the settings cannot be read: the guard must go on
SETTLE_S = 15.0  # how long a living job's process gets to set its run's final state


_left: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("jobcloud_left_containers", default=None)
_guard: contextvars.ContextVar[JobGuard | None] = contextvars.ContextVar("jobcloud_guard", default=None)


@contextmanager
def tracking_left_containers() -> Iterator[list[str]]:
    """Within this block `note_left_container` records into the list it yields (shared, so
    Prefect's copied task contexts still add to it)."""
    left: list[str] = []
    token = _left.set(left)
    try:
        yield left
    finally:
        _left.reset(token)


def note_process_group(pgid: int) -> None:
    """Tell this job's guard (if any) the process group of the job's command."""
    guard = _guard.get()
    if guard is not None:
        guard.tell(f"pgid {pgid}")


def note_left_container(container_id: str) -> None:
    """Say that the job could not remove this container (its engine was away)."""
    left = _left.get()
    if left is not None:
        left.append(container_id)


class JobGuard:
    """The job side of a guard: start it, then tell it how the job ended."""

    def __init__(self, proc: subprocess.Popen[bytes], pipe: IO[bytes]) -> None:
        self.proc = proc
        self._pipe: IO[bytes] | None = pipe

    @classmethod
    def start(cls, plan: dict[str, Any], log_path: Path) -> JobGuard:
        """Start a guard for the job that ``plan`` describes (see `guard_main`)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jobcloud.flows.job_guard"],
                stdin=subprocess.PIPE,
                # Not the job's stdout: a worker reads that until every holder has closed it.
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(plan).encode() + b"\n")
        proc.stdin.flush()
        return cls(proc, proc.stdin)

    @contextmanager
    def active(self) -> Iterator[JobGuard]:
        """Within this block `note_process_group` reaches this guard."""
        token = _guard.set(self)
        try:
            yield self
        finally:
            _guard.reset(token)

    def tell(self, line: str) -> None:
        """Send one line to the guard (lost quietly if the guard is gone)."""
        if self._pipe is None:
            return
        try:
            self._pipe.write(line.encode() + b"\n")
            self._pipe.flush()
        except OSError:
            pass

    def finish(self, word: str) -> None:
        """Say `done` (the job cleaned up), `left` (it ended but could not remove its container:
        the engine was away) or `error` (it raised), and let the guard go."""
        if self._pipe is None:
            return
        try:
            self._pipe.write(word.encode() + b"\n")
            self._pipe.close()
        except OSError:
            pass
        self._pipe = None


# -- the guard process ----------------------------------------------------------------------
def _log(msg: str) -> None:
    print(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S} job_guard[{os.getpid()}] {msg}", flush=True)


def _patience() -> float:
    from jobcloud.blocks.settings import get_settings  # here: pydantic only when there is work

    try:
        return get_settings().guard_patience_s
    except UserError:
        return DEFAULT_PATIENCE_S


def remove_job_containers(job_id: str, patience_s: float) -> int:
    """Remove every container labelled with ``job_id``; retry while the engine is away."""
    from jobcloud.blocks.engine import docker_client
    from jobcloud.flows.container_spec import JOB_LABEL

    deadline = time.monotonic() + patience_s
    delay = 1.0
    while True:
        try:
            client = docker_client(timeout=30)
            found = client.containers.list(all=True, sparse=True, filters={"label": f"{JOB_LABEL}={job_id}"})
            # All at once: an array's run has one container per running element, and a cancel
            # should not wait for them one after another.
            with ThreadPoolExecutor(max(1, min(len(found), 8))) as pool:
                list(pool.map(lambda c: c.remove(force=True), found))
            for container in found:
                _log(f"removed container {container.id[:12]} of job {job_id}")
            return len(found)
        except Exception as exc:  # noqa: BLE001 - engine down or half up: try again later
            if time.monotonic() + delay > deadline:
                _log(f"gave up removing the containers of job {job_id}: {exc}")
                return -1
            if not isinstance(exc, ContainerEngineError):
                _log(f"engine error, retrying: {exc}")
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


def keep_logs(store: Any, job_id: str, container_log: Path, log_dir: Path | None) -> list[dict[str, Any]]:
    """Upload what the job logged so far (its log folder and container.log); the records of
    what was uploaded, as `OutputRecord` fields."""
    prefix = f"jobs/{job_id}"
    records: list[dict[str, Any]] = []
    if log_dir is not None and log_dir.is_dir():
        for rec in store.upload_tree(log_dir, join_key(prefix, "log")):
            records.append({"kind": "log", **rec.model_dump()})
    if container_log.is_file():
        rec = store.upload_tree(container_log, join_key(prefix, "log"))[0]
        records = [r for r in records if r["key"] != rec.key] + [{"kind": "log", **rec.model_dump()}]
    return records


def _end_run(job_id: str, died: bool, patience_s: float) -> tuple[str, str | None]:
    """The run's final state name and message; ends it if its process died."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Crashed, StateType

    deadline = time.monotonic() + patience_s
    settle_by = time.monotonic() + SETTLE_S
    delay = 1.0
    while True:
        try:
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(job_id)
                state = run.state
                if state is not None and state.is_final():
                    return state.name, state.message
                if not died:
                    # The job's process lives: Prefect's engine (or the worker, on a cancel)
                    # sets the state; wait for it rather than race it.
                    if time.monotonic() < settle_by:
                        time.sleep(0.5)
                        continue
                    if state is not None and state.type == StateType.CANCELLING:
                        return "Cancelled", state.message
                    return "Failed", state.message if state is not None else None
                if state is not None and state.type == StateType.CANCELLING:
                    new = Cancelled(message="cancelled; the job's process was gone, its guard cleaned up")
                else:
                    new = Crashed(
                        message="the job's process died before the job ended (killed, or its worker was lost); "
                        "its container was stopped and its log so far kept"
                    )
                client.set_flow_run_state(job_id, new, force=False)
                return new.name, new.message
        except Exception as exc:  # noqa: BLE001 - server away for a while: try again
            if time.monotonic() + delay > deadline:
                _log(f"gave up ending run {job_id}: {exc}")
                return "Crashed", "the job's process died; the Prefect server did not answer its guard"
            time.sleep(delay)
            delay = min(delay * 2, 15.0)


def kill_groups(pgids: list[int]) -> None:
    """SIGKILL each process group (a job's command in in-container mode) that still exists."""
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
            _log(f"killed process group {pgid}")
        except (ProcessLookupError, PermissionError):
            pass


def _clean_up(plan: dict[str, Any], word: str, pgids: list[int] | None = None) -> None:
    job_id = plan["job_id"]
    patience = _patience()
    if word != "done":
        kill_groups(pgids or [])
    if not plan.get("engine", True):
        # In-container mode: no engine here, nothing of the job's runs as a container.
        patience = min(patience, 60.0)
        if word in ("done", "left"):
            return
    if word == "done":
        # The job removed its container itself: one look, no waiting for an engine that is away
        # (a job whose engine never answered must not leave a guard behind for long).
        remove_job_containers(job_id, 0)
        return
    if word == "left":
        remove_job_containers(job_id, patience)
        return
    died = word == ""
    _log(f"job {job_id}: {'its process died' if died else 'the job raised'}; cleaning up")
    if plan.get("engine", True):
        remove_job_containers(job_id, patience)
    manifest: dict[str, Any] = dict(plan.get("manifest") or {})
    try:
        from jobcloud.blocks.store.factory import store_from_settings

        store = store_from_settings()
        manifest_key = f"jobs/{job_id}/manifest.json"
        if not store.exists(manifest_key):
            log_dir = Path(plan["log_dir"]) if plan.get("log_dir") else None
            manifest["outputs"] = keep_logs(store, job_id, Path(plan["container_log"]), log_dir)
            name, message = _end_run(job_id, died, patience)
            manifest.update(state=name, message=message, finished_at=datetime.now(UTC).isoformat())
            store.write_bytes(manifest_key, json.dumps(manifest, indent=2).encode())
        elif died:
            _end_run(job_id, died, patience)
    except Exception as exc:  # noqa: BLE001 - keep going: the work folder must still go
        _log(f"job {job_id}: could not keep its log or manifest: {exc}")
        if died:
            _end_run(job_id, died, patience)
    work = plan.get("work")
    if work and not plan.get("keep_work"):
        shutil.rmtree(work, ignore_errors=True)
    _log(f"job {job_id}: cleaned up")


def guard_main() -> int:
    """Read the plan, wait for the job's word (or its death), clean up."""
    first = sys.stdin.buffer.readline()
    if not first:
        return 0
    plan = json.loads(first)
    pgids: list[int] = []
    word = ""
    for line in sys.stdin.buffer.read().decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "pgid" and parts[1].isdigit():
            pgids.append(int(parts[1]))
        elif parts:
            word = parts[0]
    _clean_up(plan, word, pgids)
    return 0


if __name__ == "__main__":
    sys.exit(guard_main())

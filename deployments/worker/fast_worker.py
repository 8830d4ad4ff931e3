"""The JobCloud worker: Prefect's process worker with warm starts.

Pools `cpu` and `gpu` have the type `jobcloud`; `prefect worker start --pool cpu` finds this
class through the `prefect.collections` entry point that JobCloud installs. It *is* Prefect's
`ProcessWorker` (same job template, same flow-run subprocess, cancellation and crash handling),
with one change: it starts a fork server (`jobcloud.deployments.worker.warm_start`) when it starts, and runs
each flow run through it, so a run skips importing Prefect and JobCloud again (seconds per run).
A job template that sets its own `command` is honoured as it is.

What a worker host needs is `prefect worker start --pool cpu` and PREFECT_API_URL: the settings
of the flow runs (the job store, the catalog path) come from the pool's job template
(`jobcloud.deployments.pools.work_pools`, written by `jobcloud deploy`), and the container engine is found on
the host (DOCKER_HOST, else Docker's or Podman's socket). It asks for work every
`QUERY_SECONDS` unless PREFECT_WORKER_QUERY_SECONDS says otherwise (Prefect's default is 10 s).

Why a process-style worker and not Prefect's Docker worker: the container that matters is the
application's, and the flow must run beside the engine to stage inputs, stream logs and upload
outputs even when that container fails; Prefect's DockerWorker also refuses the ephemeral
server, and would need JobCloud baked into every application image. The flow turns an
entrypoint's `hardware.GPU` (or a job's `hardware.gpu`) into a Docker `DeviceRequest`, so a
GPU host needs only this worker and a GPU-enabled engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.logging import get_logger
from prefect.settings import (
    PREFECT_CLIENT_RETRY_EXTRA_CODES,
    PREFECT_WORKER_QUERY_SECONDS,
    get_current_settings,
    temporary_settings,
)
from prefect.states import Cancelling, Scheduled
from prefect.utilities.processutils import command_to_string, get_sys_executable
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

from jobcloud.blocks.settings import env_name, get_settings
from jobcloud.deployments.worker.warm_start import SOCKET_ENV, run_stop_grace_s
from jobcloud.flows.definition import run_environment
from jobcloud.flows.sweeper import sweep_here

WORKER_TYPE = "jobcloud"
READY_TIMEOUT_S = 60
HEARTBEAT_S = 30  # Prefect's smallest flow-run heartbeat interval
CANCEL_WAIT_S = 10.0  # after cancelling through the server, before stopping processes directly
RETRY_EXTRA_CODES = "500"  # besides Prefect's own 408, 429, 502, 503
QUERY_SECONDS = 1.0  # how often the worker asks for work, unless PREFECT_WORKER_QUERY_SECONDS is set


def stop_grace_s() -> float:
    """How long running jobs may go on after the worker is told to stop (SIGTERM)."""
    return get_settings().worker_stop_grace_s


def sweep_interval_s() -> float:
    """Seconds between the worker's sweeps for containers and work folders of ended runs."""
    return get_settings().sweep_interval_s


PATH_SETTINGS = tuple(env_name(field) for field in ("config", "storage", "home", "workdir"))


def absolute_setting(value: str) -> str:
    """A path setting made absolute against the current folder; URLs (s3://, gs://, file://)
    and `block:` names as they are."""
    if value and "://" not in value and not value.startswith("block:") and not os.path.isabs(value):
        return os.path.abspath(os.path.expanduser(value))
    return value


def absolute_paths(env: Any) -> None:
    """Make relative JOBCLOUD_* paths absolute, against the folder the worker starts in.

    Flow runs start in a temporary folder, so `JOBCLOUD_CONFIG=application_config.yaml` would
    name nothing there.
    """
    for name in PATH_SETTINGS:
        if env.get(name):
            env[name] = absolute_setting(env[name])


def warm_command() -> str:
    """Each flow run's command while a fork server runs: its client (`warm_start`)."""
    return command_to_string([get_sys_executable(), "-m", "jobcloud.deployments.worker.warm_start"])


class JobCloudJobConfiguration(ProcessJobConfiguration):
    """Process job configuration whose default command goes through the fork server."""

    def prepare_for_flow_run(self, flow_run: Any, deployment: Any = None, flow: Any = None, **kwargs: Any) -> None:
        # Set before Prefect's preparation: a command present then counts as configured, and
        # Prefect's process worker starts exactly it. A template's own command stays.
        if self.command is None and get_settings().warm_socket:
            self.command = warm_command()
        super().prepare_for_flow_run(flow_run, deployment, flow, **kwargs)
        # Flow-run heartbeats let the server's zombie automation end runs of a lost host.
        self.env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_S))
        # A server whose database restarts answers 500 for a while: a run rides it out with the
        # client's retries (about a minute) instead of failing a job whose container did fine.
        self.env.setdefault("PREFECT_CLIENT_RETRY_EXTRA_CODES", RETRY_EXTRA_CODES)


def _fresh(state: Any) -> Any:
    """A new state of the same type, name and message as ``state`` (a past one cannot be reused)."""
    from prefect.client.schemas.objects import State

    return State(type=state.type, name=state.name, message=state.message)


class JobCloudWorker(ProcessWorker):
    """Prefect's process worker plus a fork server for warm flow-run starts."""

    type = WORKER_TYPE
    job_configuration = JobCloudJobConfiguration
    _description = "Runs JobCloud jobs as flow-run subprocesses, started warm from a fork server."
    _display_name = "JobCloud (process)"

    @property
    def log(self) -> logging.Logger:
        """This worker's logger (named as Prefect names a worker's own: workers.TYPE.NAME)."""
        return get_logger(f"workers.{self.type}.{self.name.lower()}")

    async def start(self, *args: Any, **kwargs: Any) -> None:
        """Prefect's worker loop, asking for work every `QUERY_SECONDS` unless the user set
        PREFECT_WORKER_QUERY_SECONDS (environment, profile): `set_defaults` keeps theirs."""
        defaults = {PREFECT_WORKER_QUERY_SECONDS: QUERY_SECONDS, PREFECT_CLIENT_RETRY_EXTRA_CODES: {500}}
        with temporary_settings(set_defaults=defaults):
            self.log.info("asks for work every %g s", PREFECT_WORKER_QUERY_SECONDS.value())
            await super().start(*args, **kwargs)

    async def __aenter__(self) -> JobCloudWorker:
        absolute_paths(os.environ)
        await super().__aenter__()
        self._warm: subprocess.Popen | None = None
        self._active: set[str] = set()
        self._returning: set[str] = set()
        self._stopping = False
        self._stop_now = asyncio.Event()
        self._main_task = asyncio.current_task()
        if get_settings().warm_start:
            self._start_warm()
        self._install_stop_signals()
        self._sweeper = asyncio.ensure_future(self._sweep_forever())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._sweeper.cancel()
        self._stop_warm()
        await super().__aexit__(*exc_info)

    # -- stopping on SIGTERM ---------------------------------------------------------------
    # Prefect 3.8.8's `prefect worker start` turns SIGTERM into a SIGINT to itself and then
    # does not exit, idle or busy; a second SIGTERM SIGKILLs it, orphaning its runs. JobCloud's
    # worker replaces that handler: stop taking runs, let running jobs finish for
    # JOBCLOUD_WORKER_STOP_GRACE_S, cancel the rest through Prefect, then exit.
    def _install_stop_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_stop_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread (tests) or no signals here: Prefect's handler stays

    def _on_stop_signal(self, sig: int) -> None:
        if self._stopping:
            self.log.warning("%s again: cancelling the running jobs now", signal.Signals(sig).name)
            self._stop_now.set()
            return
        self._stopping = True
        grace = stop_grace_s()
        self.log.info(
            "%s: taking no new runs; %d running job(s) get %.0f s to finish, then are cancelled",
            signal.Signals(sig).name,
            len(self._active),
            grace,
        )
        asyncio.ensure_future(self._drain(grace))

    async def get_and_submit_flow_runs(self) -> list[Any]:
        if getattr(self, "_stopping", False):
            return []
        return await super().get_and_submit_flow_runs()

    async def run(self, flow_run: Any, configuration: Any, task_status: Any = None) -> Any:
        if getattr(self, "_stopping", False):
            return await self._give_back(flow_run, task_status)
        ended = await self._ended_since_seen(flow_run)
        if ended is not None:
            return await self._leave_ended(flow_run, ended, task_status)
        self._active.add(str(flow_run.id))
        try:
            # Prefect loads the run's flow here to look for on_cancellation hooks; this host may
            # have no catalog file, the run's job template carries the entrypoint's definition.
            with run_environment(configuration.env):
                return await super().run(flow_run, configuration, task_status)
        finally:
            self._active.discard(str(flow_run.id))

    # -- a stale submission ------------------------------------------------------------------
    # A worker asks for scheduled runs, then submits each (Pending). Cut off from the server in
    # between, it submits minutes later a run that another worker has taken and finished since.
    # Prefect lets a Completed run without a persisted result (JobCloud's) go back to Pending,
    # so the job would run twice. The run's history tells: when the state this worker's Pending
    # follows is final, the run had ended; that state is put back and nothing starts.
    async def _ended_since_seen(self, flow_run: Any) -> Any:
        try:
            async with get_client() as client:
                history = await client.read_flow_run_states(flow_run.id)
        except Exception as exc:  # noqa: BLE001 - unknown: run it, as Prefect would
            self.log.warning("could not read the history of flow run %s: %s", flow_run.id, exc)
            return None
        # This worker's Pending (and Submitting) come last; the state they followed is the one
        # the run was in when this worker took it: Scheduled normally, final if it had ended.
        before = [st for st in sorted(history, key=lambda st: st.timestamp) if not st.is_pending()]
        return before[-1] if before and before[-1].is_final() else None

    async def _leave_ended(self, flow_run: Any, ended: Any, task_status: Any) -> ProcessWorkerResult:
        self.log.warning("flow run %s ended (%s) after this worker saw it scheduled; not running it again", flow_run.id, ended.name)
        try:
            async with get_client() as client:
                await client.set_flow_run_state(flow_run.id, _fresh(ended), force=True)
        except Exception as exc:  # noqa: BLE001 - the run stays Pending; the zombie rules end it
            self.log.warning("could not restore the final state of flow run %s: %s", flow_run.id, exc)
        if task_status is not None:
            task_status.started(0)
        return ProcessWorkerResult(identifier="", status_code=0)

    async def _give_back(self, flow_run: Any, task_status: Any) -> ProcessWorkerResult:
        """Return a run that a poll begun before the stop signal brought in: back to Scheduled,
        for another worker (or this one, restarted) to take. Nothing of it has started."""
        self.log.info("stopping: flow run %s goes back to the queue", flow_run.id)
        self._returning.add(str(flow_run.id))  # the drain waits for it before the worker exits
        try:
            async with get_client() as client:
                await client.set_flow_run_state(flow_run.id, Scheduled(message="its worker was stopping; back in the queue"), force=True)
        except Exception as exc:  # noqa: BLE001 - it stays Pending; the zombie rules end it
            self.log.warning("could not return flow run %s to the queue: %s", flow_run.id, exc)
        finally:
            self._returning.discard(str(flow_run.id))
        if task_status is not None:
            task_status.started(0)  # no process: Prefect records no infrastructure pid
        return ProcessWorkerResult(identifier="", status_code=0)

    async def _drain(self, grace: float) -> None:
        if self._active:
            try:
                await asyncio.wait_for(self._wait_idle(), timeout=grace)
            except TimeoutError:
                pass
        if self._active:
            self.log.info("cancelling %d job(s) still running: %s", len(self._active), ", ".join(sorted(self._active)))
            await self._cancel_active()
            try:
                await asyncio.wait_for(self._wait_idle(), timeout=CANCEL_WAIT_S)
            except TimeoutError:
                # The server did not relay the cancel: stop the runs' processes ourselves; their
                # guards end the runs and keep their logs.
                self.log.warning("jobs did not stop after cancelling; stopping their processes")
                self._stop_warm()
        while self._returning:
            await asyncio.sleep(0.1)
        self.log.info("worker stopping")
        if self._main_task is not None:
            self._main_task.cancel()

    async def _wait_idle(self) -> None:
        while self._active and not self._stop_now.is_set():
            await asyncio.sleep(0.2)

    async def _cancel_active(self) -> None:

        async with get_client() as client:
            for run_id in list(self._active):
                try:
                    await client.set_flow_run_state(
                        run_id, Cancelling(message="its worker was stopped (SIGTERM) and the grace period ran out"), force=True
                    )
                except Exception as exc:  # noqa: BLE001 - server away: the fallback stops it
                    self.log.warning("could not cancel flow run %s: %s", run_id, exc)

    # -- sweeping ---------------------------------------------------------------------------
    async def _sweep_forever(self) -> None:
        while True:
            try:
                report = await asyncio.to_thread(sweep_here)
                if report.containers_removed or report.folders_removed:
                    self.log.info(
                        "sweeper removed containers %s and work folders %s of ended runs",
                        report.containers_removed,
                        report.folders_removed,
                    )
            except Exception as exc:  # noqa: BLE001 - a failed sweep is retried next time
                self.log.warning("sweep failed: %s", exc)
            await asyncio.sleep(sweep_interval_s())

    # Prefect's private hook, the one private name JobCloud overrides (no public one exists):
    # the labels only say which worker took the run, but the stock worker marks the run
    # Crashed when this write fails, which a busy SQLite server does now and then ("database
    # is locked" -> 503 after the client's retries): one job in a hundred lost in
    # bench/dispatch.py. A job must not be lost over a label. Only the server's answers are
    # caught: were Prefect to rename the hook, super() raises AttributeError, and
    # tests/unit/test_deploy_warm_start.py fails on that and on the name missing from Prefect.
    async def _give_worker_labels_to_flow_run(self, flow_run_id: Any) -> None:
        try:
            await super()._give_worker_labels_to_flow_run(flow_run_id)
        except httpx.HTTPError as exc:  # PrefectHTTPStatusError (5xx after retries), connection errors
            self.log.warning("could not label flow run %s with this worker: %s", flow_run_id, exc)

    def _start_warm(self) -> None:

        folder = Path(tempfile.mkdtemp(prefix="jobcloud-warm-"))
        path = str(folder / "fork.sock")
        # The server's environment is what a flow run's would be (settings included).
        env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True)}
        log = open(folder / "warm_start.log", "ab")
        self._warm = subprocess.Popen(
            [get_sys_executable(), "-m", "jobcloud.deployments.worker.warm_start", "--serve", path],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and self._warm.poll() is None and not os.path.exists(path):
            time.sleep(0.1)
        if os.path.exists(path):
            os.environ[SOCKET_ENV] = path
            self.log.info("warm starts on: fork server %s (pid %s)", path, self._warm.pid)
        else:
            self.log.warning("fork server did not start (see %s); runs start cold", folder / "warm_start.log")
            self._stop_warm()

    def _stop_warm(self) -> None:
        os.environ.pop(SOCKET_ENV, None)
        proc = getattr(self, "_warm", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                # The fork server gives its runs run_stop_grace_s() after SIGTERM before SIGKILL.
                proc.wait(run_stop_grace_s() + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._warm = None

"""The JobCloud worker: Prefect's process worker with warm starts.

Pools `cpu` and `gpu` have the type `jobcloud`; `prefect worker start --pool cpu` finds this
class through the `prefect.collections` entry point that JobCloud installs. It *is* Prefect's
`ProcessWorker` (same job template, same flow-run subprocess, cancellation and crash handling),
with one change: it starts a fork server (`deployments.warm_start`) when it starts, and runs
each flow run through it, so a run skips importing Prefect and JobCloud again (seconds per run).
A job template that sets its own `command` is honoured as it is.

Why a process-style worker and not Prefect's Docker worker: the container that matters is the
application's, and the flow must run beside the engine to stage inputs, stream logs and upload
outputs even when that container fails; Prefect's DockerWorker also refuses the ephemeral
server, and would need JobCloud baked into every application image. The flow turns an
entrypoint's `hardware.GPU` (or a job's `hardware.gpu`) into a Docker `DeviceRequest`, so a
GPU host needs only this worker and a GPU-enabled engine.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from prefect.utilities.processutils import command_to_string, get_sys_executable
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker

from deployments.warm_start import SOCKET_ENV

WORKER_TYPE = "jobcloud"
READY_TIMEOUT_S = 60


PATH_SETTINGS = ("JOBCLOUD_CONFIG", "JOBCLOUD_STORAGE", "JOBCLOUD_HOME", "JOBCLOUD_WORKDIR")


def absolute_paths(env: Any) -> None:
    """Make relative JOBCLOUD_* paths absolute, against the folder the worker starts in.

    Flow runs start in a temporary folder, so `JOBCLOUD_CONFIG=application_config.yaml` would
    name nothing there. URLs (s3://, gs://, file://) and `block:` names are left alone.
    """
    for name in PATH_SETTINGS:
        value = env.get(name)
        if value and "://" not in value and not value.startswith("block:") and not os.path.isabs(value):
            env[name] = os.path.abspath(os.path.expanduser(value))


class JobCloudJobConfiguration(ProcessJobConfiguration):
    """Process job configuration whose default command goes through the fork server."""

    def prepare_for_flow_run(self, flow_run: Any, deployment: Any = None, flow: Any = None, **kwargs: Any) -> None:
        super().prepare_for_flow_run(flow_run, deployment, flow, **kwargs)
        if not self._command_configured and os.environ.get(SOCKET_ENV):
            self.command = command_to_string([get_sys_executable(), "-m", "deployments.warm_start"])
            self._command_configured = True


class JobCloudWorker(ProcessWorker):
    """Prefect's process worker plus a fork server for warm flow-run starts."""

    type = WORKER_TYPE
    job_configuration = JobCloudJobConfiguration
    _description = "Runs JobCloud jobs as flow-run subprocesses, started warm from a fork server."
    _display_name = "JobCloud (process)"

    async def __aenter__(self) -> "JobCloudWorker":
        absolute_paths(os.environ)
        await super().__aenter__()
        self._warm: subprocess.Popen | None = None
        if os.environ.get("JOBCLOUD_WARM_START", "1") != "0":
            self._start_warm()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self._stop_warm()
        await super().__aexit__(*exc_info)

    async def _give_worker_labels_to_flow_run(self, flow_run_id: Any) -> None:
        # The labels only say which worker took the run. The stock worker marks the run
        # Crashed when this write fails, which a busy SQLite server does now and then
        # ("database is locked" -> 503 after the client's retries): one job in a hundred
        # lost in bench/dispatch.py. A job must not be lost over a label.
        try:
            await super()._give_worker_labels_to_flow_run(flow_run_id)
        except Exception as exc:  # noqa: BLE001 - any failure here is cosmetic
            self._logger.warning("could not label flow run %s with this worker: %s", flow_run_id, exc)

    def _start_warm(self) -> None:
        from prefect.settings import get_current_settings

        folder = Path(tempfile.mkdtemp(prefix="jobcloud-warm-"))
        path = str(folder / "fork.sock")
        # The server's environment is what a flow run's would be (settings included).
        env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True)}
        log = open(folder / "warm_start.log", "ab")
        self._warm = subprocess.Popen(
            [get_sys_executable(), "-m", "deployments.warm_start", "--serve", path],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and self._warm.poll() is None and not os.path.exists(path):
            time.sleep(0.1)
        if os.path.exists(path):
            os.environ[SOCKET_ENV] = path
            self._logger.info("warm starts on: fork server %s (pid %s)", path, self._warm.pid)
        else:
            self._logger.warning("fork server did not start (see %s); runs start cold", folder / "warm_start.log")
            self._stop_warm()

    def _stop_warm(self) -> None:
        os.environ.pop(SOCKET_ENV, None)
        proc = getattr(self, "_warm", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._warm = None

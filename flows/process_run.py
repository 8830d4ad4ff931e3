"""Run a job's command as a subprocess: the in-container runner.

In in-container mode (`JOBCLOUD_RUNNER=process`) a Prefect worker of any type (Docker,
Kubernetes, ECS, Cloud Run, Vertex AI) has started the application's image with the job flow
inside it; the flow stages the inputs to /files and runs the entrypoint's command here, as
`/bin/sh -c` in its own process group, with the same environment a container would get: the
image's own variables and the job's allow-listed and secret ones, never the flow's Prefect and
JobCloud settings or cloud credentials. Output is read line by line; the timeout and a cancel
end the whole process group (SIGTERM, then SIGKILL after a grace), and whatever the command
left running in its group is killed when it ends, so no process outlives its job. CPU, memory
and GPUs come from the infrastructure (the pool's job template), not from here; a job that
asks for GPUs fails at once when it cannot see them.
"""

from __future__ import annotations

import contextvars
import os
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path

from jobcloud.blocks.errors import GpuUnavailableError
from jobcloud.blocks.settings import get_settings
from jobcloud.flows.cancel_watch import cancel_requested, stop_reason
from jobcloud.flows.container_spec import ContainerSpec
from jobcloud.flows.job_guard import note_process_group
from jobcloud.flows.run_outcome import CANCEL_GRACE_S, TAIL_LINES, LineSplitter, RunOutcome

# Never passed to the command: the flow's own settings (its Prefect API and key, the job store
# and its credentials) and the cloud credentials a worker may have put in the environment.
HIDDEN_PREFIXES = ("PREFECT_", "JOBCLOUD_", "AWS_", "GOOGLE_", "GCE_", "AZURE_", "DOCKER_")
HIDDEN_NAMES = frozenset({"CLOUDSDK_CONFIG", "KUBECONFIG"})
DEVICES = Path("/dev")
_NVIDIA_DEVICE = re.compile(r"^nvidia\d+$")


def child_environment(parent: Mapping[str, str], spec: ContainerSpec) -> dict[str, str]:
    """The command's environment: ``parent`` (the image's) without JobCloud's, Prefect's and
    cloud settings, then the job's allow-listed variables and its secrets."""
    env = {k: v for k, v in parent.items() if not k.startswith(HIDDEN_PREFIXES) and k not in HIDDEN_NAMES}
    env.update(spec.environment)
    env.update({k: v.get_secret_value() for k, v in spec.secret_environment.items()})
    return env


def visible_gpus(devices: Path = DEVICES) -> int:
    """How many NVIDIA GPUs this container sees (/dev/nvidia0, /dev/nvidia1, ...)."""
    try:
        return sum(1 for p in devices.iterdir() if _NVIDIA_DEVICE.match(p.name))
    except OSError:
        return 0


def require_visible_gpus(wanted: int, devices: Path = DEVICES) -> None:
    """Fail before the command starts when the job asked for GPUs this container cannot see:
    it must never train on the CPU quietly."""
    if wanted <= 0:
        return
    seen = visible_gpus(devices)
    if seen < wanted:
        raise GpuUnavailableError(
            wanted,
            "this container",
            f"the job asks for {wanted} GPU(s) but this container sees {seen} ({devices}/nvidia*): "
            "run it on a pool whose job template gives GPUs (the gpu pool), or pass --gpu 0",
        )


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM the command's group, SIGKILL it after ``grace`` seconds; its exit code."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        return _code(proc.wait(timeout=grace))
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        return _code(proc.wait())


def _code(returncode: int) -> int:
    # A shell reports death by signal N as 128 + N; so does the container engine.
    return 128 - returncode if returncode < 0 else returncode


def run_process(
    spec: ContainerSpec,
    on_line: Callable[[str], None],
    on_start: Callable[[str], None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunOutcome:
    """Run ``spec.command`` in ``spec.host_files`` to its end, calling ``on_line`` per line.

    Stops it after ``spec.timeout`` seconds or when the job is cancelled. Its process group is
    killed in every case, including when this thread is interrupted (a SIGTERM to the flow).
    """
    require_visible_gpus(spec.gpus)
    env = child_environment(os.environ if environ is None else environ, spec)
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    def emit(line: str) -> None:
        tail.append(line)
        on_line(line)

    splitter = LineSplitter(emit)
    proc = subprocess.Popen(
        spec.command,
        cwd=spec.host_files,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: one signal reaches all it started
    )
    note_process_group(proc.pid)  # the job's guard kills the group if this process dies
    outcome = RunOutcome(exit_code=None, timed_out=False, started_at=time.time())
    try:
        if on_start:
            on_start(f"pid {proc.pid}")
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            while chunk := os.read(stdout.fileno(), 65536):
                splitter.feed(chunk)
            splitter.close()

        # The reader logs through Prefect: it needs this context (API settings, the run).
        reader = threading.Thread(target=contextvars.copy_context().run, args=(pump,), name="command-output", daemon=True)
        reader.start()
        deadline = outcome.started_at + spec.timeout if spec.timeout else None
        while outcome.exit_code is None:
            try:
                outcome.exit_code = _code(proc.wait(timeout=0.2))
            except subprocess.TimeoutExpired:
                pass
            else:
                break
            if cancel_requested():
                outcome.cancelled = True
                on_line(f"[jobcloud] {stop_reason()}: stopping the command")
                outcome.exit_code = _stop(proc, CANCEL_GRACE_S)
            elif deadline is not None and time.time() >= deadline:
                outcome.timed_out = True
                on_line(f"[jobcloud] timeout after {spec.timeout} s: stopping the command")
                outcome.exit_code = _stop(proc, get_settings().stop_grace_s)
        # Whatever the command left running in its group would hold its output open.
        _signal_group(proc.pid, signal.SIGKILL)
        reader.join(timeout=10)
        outcome.ended_at = time.time()
        outcome.tail = list(tail)
        return outcome
    finally:
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)
        stdout_pipe = proc.stdout
        if stdout_pipe is not None:
            stdout_pipe.close()

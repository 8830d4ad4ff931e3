"""Cancel latency: how long after a cancel a running job is Cancelled and its containers gone,
in host mode and in-container mode, in the same run (issue 19, "Cancel in seconds everywhere").

    DOCKER_HOST=unix:///run/podman/podman.sock .venv/bin/python bench/cancel.py [--n 10] [--engine-stops 2]

One Prefect server, SeaweedFS as the job store (an S3 block) and one catalog with one sleeping
entrypoint (`echo going to sleep; sleep 300`, the torchfit image with this checkout's JobCloud)
deployed twice (tests/e2e/docker_stack.py builds the image and the stack):
- host mode: `sleepy/v1/host` on pool `gpu`, type `jobcloud` (`prefect worker start --pool gpu
  --type jobcloud`): the flow runs on the worker host and starts the command's container
  through the engine. (The catalog asks for a GPU only to land it on the second pool; each job
  is submitted with `--gpu 0`.)
- in-container: `sleepy/v1/nap` on pool `cpu`, type `docker` (prefect-docker's DockerWorker):
  the flow runs inside the image and runs the command as a subprocess.
For each mode, `--n` times, alternating: submit a job (`jobcloud run --no-wait`), wait until its
command runs (the run Running in phase `running`, `sleep 300` in a running container of the
job), cancel it as `jobcloud jobs cancel` does (`set_flow_run_state(id, Cancelling(),
force=True)`), then poll the run's state and the engine's containers every 0.1 s: seconds from
the cancel to the final state, and to no container of the job (labels `io.jobcloud.job-id`,
`io.prefect.flow-run-id`) being left.

`--engine-stops K` adds what Prefect's docker worker's own kill does to an in-container job
(`container.stop(timeout=30)`: SIGTERM to the container's PID 1, SIGKILL after 30 s): K jobs
stopped while the command runs, K stopped as soon as the flow's container runs (before the run
is Running: the pending-run cancel, the only one prefect-docker's worker acts on). It prints PID
1's command line and whether it catches or ignores SIGTERM at that moment (/proc/1/status).
`--init` sets `container_create_kwargs.init` on the in-container deployment (the engine's init,
e.g. Podman's catatonit, becomes PID 1 and forwards signals to the flow's Python).

Goal: in-container Cancelled within 5 s of the cancel (median). Prints a table; writes
bench/results/cancel.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IMAGE = "localhost/jobcloud-bench/torchfit-current:1"  # not the e2e test's tag: both may run at once
COMMAND = "echo going to sleep; sleep 300"
MODES = {
    "host": ("sleepy/v1/host", ["--gpu", "0"]),
    "in-container": ("sleepy/v1/nap", []),
}
LABELS = ("io.jobcloud.job-id", "io.prefect.flow-run-id")
GOAL_S = 5.0
POLL_S = 0.1
FINAL_WITHIN_S = 60.0
SIGTERM_BIT = 1 << (15 - 1)


def catalog() -> dict[str, Any]:
    entry = {"app": {"cmd": [COMMAND]}, "handler": {"image_url": IMAGE, "files_up": {"log": "log"}}}
    return {
        "sleepy": {
            "v1": {
                "nap": {"description": "Sleeps (in-container: pool cpu, type docker).", **entry},
                "host": {
                    "description": "Sleeps (host mode: pool gpu, type jobcloud; submitted with --gpu 0).",
                    **entry,
                    "aws_resources": {"hardware": {"GPU": 1}},
                },
            }
        }
    }


def job_containers(docker_client: Any, job: str, sparse: bool = False) -> list[Any]:
    """The containers of ``job`` (either label); ``sparse``: from the listing alone, so that one
    removed meanwhile cannot fail the call."""
    import docker.errors

    found: dict[str, Any] = {}
    for label in LABELS:
        for _ in range(5):
            try:
                listed = docker_client.containers.list(all=True, sparse=sparse, filters={"label": f"{label}={job}"})
            except docker.errors.NotFound:  # one went between the listing and its inspection
                continue
            found.update((c.id, c) for c in listed)
            break
    return list(found.values())


def processes(container: Any) -> list[str]:
    """The command lines of the processes in ``container`` (from its /proc: the engine's `top`
    answers Podman's compat API with an empty body for some images)."""
    script = 'for p in /proc/[0-9]*; do tr "\\0" " " < $p/cmdline; echo; done 2>/dev/null'
    code, out = container.exec_run(["/bin/sh", "-c", script])
    return [line.strip() for line in out.decode(errors="replace").splitlines() if line.strip()] if code == 0 else []


def sleeping_container(docker_client: Any, job: str) -> Any | None:
    """The job's running container in which the command's `sleep 300` runs (None: not yet)."""
    for c in job_containers(docker_client, job):
        if c.status != "running":
            continue
        try:
            procs = processes(c)
        except Exception:  # noqa: BLE001 - it stopped meanwhile
            continue
        if any(p.startswith("sleep 300") for p in procs):
            return c
    return None


def submit(stack: Any, mode: str) -> str:
    from tests.e2e.docker_stack import ok

    ref, extra = MODES[mode]
    return ok(stack.cli("run", ref, "--no-wait", *extra)).stdout.strip().splitlines()[-1]


def wait_until_sleeping(client: Any, docker_client: Any, job: str, stack: Any, within: float = 240) -> Any:
    from jobcloud.deployments.jobs.show import phase_of

    deadline = time.monotonic() + within
    seen: list[Any] = []
    while time.monotonic() < deadline:
        run = client.read_flow_run(UUID(job))
        if run.state and run.state.is_final():
            sys.exit(f"job {job} ended before it was cancelled: {run.state.name} {run.state.message}\n{stack.worker.tail()}")
        phase = phase_of(client, run) if run.state and run.state.is_running() else None
        seen[:] = [run.state.name if run.state else None, phase]
        if phase == "running":
            container = sleeping_container(docker_client, job)
            if container is not None:
                return container
            seen.append([(c.short_id, c.status) for c in job_containers(docker_client, job)])
        time.sleep(0.2)
    sys.exit(f"job {job}: its command did not run within {within:.0f} s (last seen: {seen})\n{stack.worker.tail()}")


def watch(client: Any, job: str, t0: float, engine: str) -> dict[str, Any]:
    """Poll the run's state and the job's containers every POLL_S from ``t0``: seconds to the
    final state (and its name) and to no container of the job left."""
    import docker

    gone: dict[str, float | None] = {"s": None}

    def containers() -> None:
        dc = docker.DockerClient(base_url=engine)
        try:
            while time.monotonic() - t0 < FINAL_WITHIN_S + 30:
                try:
                    left = job_containers(dc, job, sparse=True)
                except Exception:  # noqa: BLE001 - a slow or failed listing: ask again
                    left = [None]
                if not left:
                    gone["s"] = time.monotonic() - t0
                    return
                time.sleep(POLL_S)
        finally:
            dc.close()

    thread = threading.Thread(target=containers, daemon=True)
    thread.start()
    final: float | None = None
    state = "?"
    while time.monotonic() - t0 < FINAL_WITHIN_S:
        run = client.read_flow_run(UUID(job))
        state = run.state.name if run.state else "?"
        if run.state and run.state.is_final():
            final = time.monotonic() - t0
            break
        time.sleep(POLL_S)
    thread.join(FINAL_WITHIN_S + 30)
    return {"job": job, "state": state, "to_final_s": final, "to_gone_s": gone["s"]}


def cancel_one(stack: Any, client: Any, docker_client: Any, engine: str, mode: str) -> dict[str, Any]:
    from prefect.states import Cancelling

    job = submit(stack, mode)
    wait_until_sleeping(client, docker_client, job, stack)
    t0 = time.monotonic()
    result = client.set_flow_run_state(UUID(job), Cancelling(message="cancelled by bench/cancel.py"), force=True)
    if result.status.value != "ACCEPT":
        sys.exit(f"job {job}: the server did not accept the cancel: {result.details}")
    return {"mode": mode, **watch(client, job, t0, engine)}


def pid1(container: Any) -> dict[str, Any]:
    """PID 1's command line and SIGTERM disposition in ``container`` (from /proc/1/status)."""
    code, out = container.exec_run(["cat", "/proc/1/cmdline", "/proc/1/status"])
    text = out.decode(errors="replace")
    cmdline, _, status = text.partition("Name:")
    fields = dict(line.split(":", 1) for line in ("Name:" + status).splitlines() if ":" in line)
    caught = int(fields.get("SigCgt", "0").strip() or "0", 16)
    ignored = int(fields.get("SigIgn", "0").strip() or "0", 16)
    blocked = int(fields.get("SigBlk", "0").strip() or "0", 16)
    if caught & SIGTERM_BIT:
        sigterm = "caught"
    elif blocked & SIGTERM_BIT:
        sigterm = "blocked (an init reading it from a signalfd)"
    elif ignored & SIGTERM_BIT:
        sigterm = "ignored"
    else:
        sigterm = "default (PID 1: ignored by the kernel)"
    return {"cmdline": cmdline.replace("\0", " ").strip(), "sigterm": sigterm}


def engine_stop_one(stack: Any, client: Any, docker_client: Any, engine: str, when: str) -> dict[str, Any]:
    """An in-container job whose container is stopped as prefect-docker's kill_infrastructure
    does (`container.stop(timeout=30)`), ``when`` `running` (the command runs) or `early` (the
    flow's container has just started)."""
    from prefect.states import Cancelled

    mode = next(m for m in MODES if m.startswith("in-container"))
    job = submit(stack, mode)
    deadline = time.monotonic() + 240
    container = None
    while container is None and time.monotonic() < deadline:
        running = [c for c in job_containers(docker_client, job) if c.status == "running"]
        container = running[0] if running else None
        time.sleep(0.05)
    if container is None:
        sys.exit(f"job {job}: no container within 240 s\n{stack.worker.tail()}")
    armed_after: float | None = None
    if when == "running":
        # How long after its container runs PID 1 leaves SIGTERM without a handler.
        seen = time.monotonic()
        while armed_after is None and time.monotonic() - seen < 120:
            try:
                if pid1(container)["sigterm"].startswith(("caught", "blocked")):
                    armed_after = time.monotonic() - seen
            except Exception:  # noqa: BLE001 - exec refused while the container starts
                pass
            time.sleep(0.1)
        container = wait_until_sleeping(client, docker_client, job, stack)
    pid = pid1(container)
    run_state = client.read_flow_run(UUID(job)).state
    stopped: dict[str, float] = {}
    t0 = time.monotonic()

    def stop() -> None:
        try:
            container.stop(timeout=30)
        except Exception:  # noqa: BLE001 - gone meanwhile
            pass
        stopped["s"] = time.monotonic() - t0

    threading.Thread(target=stop, daemon=True).start()
    out = watch(client, job, t0, engine)
    run = client.read_flow_run(UUID(job))
    if not (run.state and run.state.is_final()):  # leave nothing running for the next job
        client.set_flow_run_state(UUID(job), Cancelled(message="bench/cancel.py cleanup"), force=True)
    return {
        "mode": f"{mode}, engine stop ({when})",
        "state_at_stop": run_state.name if run_state else "?",
        "stop_returned_s": stopped.get("s"),
        "sigterm_handler_after_s": armed_after,
        **pid,
        **out,
    }


def use_init(client: Any) -> None:
    """The in-container deployment's containers start under the engine's init (`docker run --init`)."""
    from prefect.client.schemas.actions import DeploymentUpdate

    dep = client.read_deployment_by_name("sleepy-nap/sleepy-v1-nap")
    variables = dict(dep.job_variables or {})
    variables["container_create_kwargs"] = {**(variables.get("container_create_kwargs") or {}), "init": True}
    client.update_deployment(dep.id, DeploymentUpdate(job_variables=variables))
    MODES["in-container (init)"] = MODES.pop("in-container")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10, help="cancels per mode (alternating order)")
    parser.add_argument("--init", action="store_true", help="run the in-container flow under the engine's init (PID 1)")
    parser.add_argument("--engine-stops", type=int, default=2, help="in-container containers stopped by the engine, per moment (0: skip)")
    args = parser.parse_args()

    import docker

    from jobcloud.blocks.engine import engine_url
    from jobcloud.deployments.imaging.build import build
    from tests.e2e.docker_stack import BASE_IMAGE, build_current_image, docker_stack, remove_image
    from tests.prefect_helpers import prefect_client

    engine = os.environ.get("DOCKER_HOST") or engine_url() or ""
    os.environ["DOCKER_HOST"] = engine
    docker_client = docker.DockerClient(base_url=engine)
    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        build(["torchfit"], log=lambda m: None)
    build_current_image(engine, IMAGE)
    tmp = Path(tempfile.mkdtemp(prefix="jobcloud-bench-cancel-", dir="/var/tmp"))
    rows: list[dict[str, Any]] = []
    load = [os.getloadavg()[0]]
    try:
        with docker_stack(engine, tmp, catalog(), {"cpu": "docker", "gpu": "jobcloud"}) as stack:
            with prefect_client(stack.server.api_url) as client:
                if args.init:
                    use_init(client)
                for i in range(args.n):
                    order = list(MODES) if i % 2 == 0 else list(reversed(MODES))
                    for mode in order:
                        row = cancel_one(stack, client, docker_client, engine, mode)
                        rows.append(row)
                        print(
                            f"{i + 1}/{args.n} {mode}: {fmt(row['to_final_s'])} s to {row['state']}, {fmt(row['to_gone_s'])} s to no container",
                            file=sys.stderr,
                        )
                for _ in range(args.engine_stops):
                    for when in ("running", "early"):
                        row = engine_stop_one(stack, client, docker_client, engine, when)
                        rows.append(row)
                        print(
                            f"engine stop ({when}, run {row['state_at_stop']}): PID 1 `{row['cmdline']}` SIGTERM {row['sigterm']}; "
                            f"(a handler {fmt(row['sigterm_handler_after_s'])} s after the container ran); "
                            f"stop() returned after {fmt(row['stop_returned_s'])} s; {fmt(row['to_final_s'])} s to {row['state']}, "
                            f"{fmt(row['to_gone_s'])} s to no container",
                            file=sys.stderr,
                        )
            print(
                f"host worker log tail:\n{stack.workers['gpu'].tail(15)}\ndocker worker log tail:\n{stack.workers['cpu'].tail(15)}",
                file=sys.stderr,
            )
    finally:
        remove_image(engine, IMAGE)
        shutil.rmtree(tmp, ignore_errors=True)
    load.append(os.getloadavg()[0])
    results = {"when": datetime.now(UTC).isoformat(), "cpus": os.cpu_count(), "load": load, "n": args.n, "rows": rows}
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cancel.json").write_text(json.dumps(results, indent=2))
    _print(results)


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _stats(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    missing = len(values) - len(got)
    text = f"{statistics.median(got):.1f} / {min(got):.1f} / {max(got):.1f}"
    return text + (f" ({missing} never)" if missing else "")


def _print(results: dict[str, Any]) -> None:
    rows = results["rows"]
    table = Table(
        title=f"Cancel of a running job (sleep 300), seconds from the cancel; one {results['cpus']}-CPU machine, Podman, load {results['load'][0]:.1f} -> {results['load'][1]:.1f}"
    )
    for col in ("mode", "n", "final states", "to final state: median / min / max", "to no container: median / min / max"):
        table.add_column(col, justify="left" if col in ("mode", "final states") else "right")
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        states: dict[str, int] = {}
        for r in mine:
            states[r["state"]] = states.get(r["state"], 0) + 1
        table.add_row(
            mode,
            str(len(mine)),
            ", ".join(f"{k} {v}" for k, v in states.items()),
            _stats([r["to_final_s"] for r in mine]),
            _stats([r["to_gone_s"] for r in mine]),
        )
    Console(width=200).print(table)
    inc_mode = "in-container (init)" if any(r["mode"] == "in-container (init)" for r in rows) else "in-container"
    inc = [r["to_final_s"] for r in rows if r["mode"] == inc_mode and r["state"] == "Cancelled" and r["to_final_s"] is not None]
    n_inc = sum(1 for r in rows if r["mode"] == inc_mode)
    if n_inc:
        med = statistics.median(inc) if len(inc) == n_inc else float("inf")
        print(
            f"goal: in-container Cancelled within {GOAL_S:g} s (median {med:.1f} s, {len(inc)}/{n_inc} Cancelled) -> {'met' if med <= GOAL_S else 'NOT met'}"
        )


if __name__ == "__main__":
    main()

"""Dispatch latency and throughput through a real Prefect server and real process workers.

    DOCKER_HOST=unix:///run/podman/podman.sock .venv/bin/python bench/dispatch.py [--runs 10] [--jobs 100]

1. Latency on an idle worker, median of --runs tiny jobs (linefit/v1/train), for
   a) Prefect's stock process worker with default settings (`--type process`, polls every
      10 s) — the baseline,
   b) the same with `PREFECT_WORKER_QUERY_SECONDS=1`, and
   c) the JobCloud worker as documented: polls every second and starts runs warm from its
      fork server (`jobcloud.deployments.worker.fast_worker`, `jobcloud.deployments.worker.warm_start`).
   submit -> container start is from just before the flow run is created to the flow's
   "container … started" log line; submit -> Completed to the flow run's end time.
2. Throughput: --jobs tiny jobs submitted at once to pool `cpu` with a concurrency limit of 4
   (fast worker): jobs per minute, how many ended Completed (none may be lost), and the most
   containers running at once (sampled from the engine by their io.jobcloud.* labels).
Prints a table; writes bench/results/dispatch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobcloud.deployments.server.processes import PrefectServer, start_worker  # noqa: E402

ENTRY = "linefit/v1/train"
PARAMS = {"config_id": "bench/config.yaml", "data_ids": ["bench/points.csv"]}


def _started_at(client: Any, run_id: Any, timeout: float = 120) -> datetime:
    """Timestamp of the flow's 'container … started' log line."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200)
        except Exception:  # noqa: BLE001 - a 503 from a busy server: ask again
            logs = []
        for log in logs:
            if log.message.startswith("container ") and log.message.endswith(" started"):
                return log.timestamp
        time.sleep(0.3)
    raise RuntimeError(f"no 'container started' log for {run_id}")


def _submit(client: Any, deployment_id: Any) -> tuple[Any, datetime]:
    from prefect.exceptions import PrefectHTTPStatusError

    # A SQLite server on a busy 2-core host answers 503 ("database is locked") now and then,
    # after the client's own retries; a submission that was refused is simply made again.
    for attempt in range(10):
        t0 = datetime.now(UTC)
        try:
            run = client.create_flow_run_from_deployment(deployment_id, parameters=PARAMS, work_queue_name="priority-0")
            return run, t0
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 503 or attempt == 9:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def _wait_final(client: Any, run_id: Any, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            run = client.read_flow_run(run_id)
        except Exception:  # noqa: BLE001 - a 503 from a busy server: ask again
            time.sleep(1)
            continue
        if run.state and run.state.is_final():
            return run
        time.sleep(0.2)
    raise RuntimeError(f"flow run {run_id} did not end in {timeout} s")


WORKERS = {
    "stock": "Prefect process worker, defaults (baseline)",
    "poll1": "Prefect process worker, PREFECT_WORKER_QUERY_SECONDS=1",
    "jobcloud": "JobCloud worker (poll 1 s + warm start)",
}


def latency(server: PrefectServer, env: dict[str, str], tmp: Path, name: str, runs: int) -> dict[str, Any]:
    """Median submit->container start and submit->Completed over ``runs`` sequential jobs."""
    from prefect.client.orchestration import get_client

    extra = [] if name == "jobcloud" else ["--type", "process"]
    worker = start_worker(server, "cpu", env, tmp / f"worker-{name}.log", fast=name != "stock", name=f"bench-{name}", extra_args=extra)
    starts, dones, states = [], [], []
    try:
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("linefit-train/linefit-v1-train")
            time.sleep(3)  # let the worker register and finish its first poll
            for i in range(runs + 1):  # the first run warms caches up and is not counted
                # A random pause so that submissions fall anywhere in the worker's poll cycle.
                time.sleep(random.uniform(0.5, 2.5))
                run, t0 = _submit(client, dep.id)
                started = _started_at(client, run.id)
                final = _wait_final(client, run.id)
                if i == 0:
                    continue
                states.append(final.state.name)
                starts.append((started - t0).total_seconds())
                dones.append((final.end_time - t0).total_seconds())
    finally:
        worker.stop()
    return {
        "worker": name,
        "runs": runs,
        "completed": states.count("Completed"),
        "start_median_s": round(statistics.median(starts), 2),
        "start_min_s": round(min(starts), 2),
        "start_max_s": round(max(starts), 2),
        "done_median_s": round(statistics.median(dones), 2),
    }


class ContainerSampler(threading.Thread):
    """Counts running JobCloud containers (label io.jobcloud.job-id) every 0.1 s, and the flow
    runs the server has Pending or Running (what the pool limit caps) every 0.5 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        from jobcloud.blocks.engine import docker_client

        self.client = docker_client()
        self.max_running = 0
        self.max_flow_runs = 0
        self.seen: set[str] = set()
        self.stop_event = threading.Event()

    def run(self) -> None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        active = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING])))
        last_api = 0.0
        with get_client(sync_client=True) as api:
            while not self.stop_event.is_set():
                # The low-level list: no per-container inspect that races with removal.
                try:
                    running = self.client.api.containers(filters={"label": "io.jobcloud.job-id", "status": "running"})
                except Exception:  # noqa: BLE001 - a busy engine; sample again
                    running = []
                self.max_running = max(self.max_running, len(running))
                self.seen.update((c.get("Labels") or {}).get("io.jobcloud.job-id", "") for c in running)
                if time.monotonic() - last_api > 0.5:
                    last_api = time.monotonic()
                    try:
                        self.max_flow_runs = max(self.max_flow_runs, api.count_flow_runs(flow_run_filter=active))
                    except Exception:  # noqa: BLE001 - a busy server; sample again
                        pass
                time.sleep(0.1)


def throughput(server: PrefectServer, env: dict[str, str], tmp: Path, jobs: int, limit: int, name: str = "jobcloud") -> dict[str, Any]:
    """``jobs`` jobs submitted at once to pool cpu limited to ``limit`` concurrent runs."""
    from prefect.client.orchestration import get_client

    from jobcloud.deployments.deploy.sync import sync
    from jobcloud.flows.catalog import load_catalog

    sync(load_catalog(env["JOBCLOUD_CONFIG"]), limits={"cpu": limit})
    extra = [] if name == "jobcloud" else ["--type", "process"]
    worker = start_worker(
        server, "cpu", env, tmp / f"worker-throughput-{name}.log", fast=name != "stock", name=f"bench-tp-{name}", extra_args=extra
    )
    sampler = ContainerSampler()
    sampler.start()
    try:
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("linefit-train/linefit-v1-train")
            time.sleep(3)
            t0 = time.monotonic()
            ids = [_submit(client, dep.id)[0].id for _ in range(jobs)]
            finals = [_wait_final(client, i, timeout=1800) for i in ids]
            elapsed = time.monotonic() - t0
    finally:
        sampler.stop_event.set()
        sampler.join(2)
        worker.stop()
        sync(load_catalog(env["JOBCLOUD_CONFIG"]), limits={"cpu": 0})
    manifests = sum((Path(env["JOBCLOUD_STORAGE"]) / "jobs" / str(i) / "manifest.json").exists() for i in ids)
    return {
        "worker": name,
        "jobs": jobs,
        "pool_limit": limit,
        "completed": sum(f.state.is_completed() for f in finals),
        "manifests": manifests,
        "elapsed_s": round(elapsed, 1),
        "jobs_per_min": round(jobs / elapsed * 60, 1),
        "max_containers_at_once": sampler.max_running,
        "max_active_flow_runs": sampler.max_flow_runs,
        "containers_seen": len(sampler.seen),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="jobs per latency measurement (median; 0 skips it)")
    parser.add_argument("--jobs", type=int, default=100, help="jobs in the throughput run (0 skips it)")
    parser.add_argument("--limit", type=int, default=4, help="pool concurrency limit in the throughput run")
    parser.add_argument("--throughput-baseline", action="store_true", help="also run the throughput part with the stock worker")
    args = parser.parse_args()

    from jobcloud.blocks.engine import engine_url

    tmp = Path(tempfile.mkdtemp(prefix="jobcloud-bench-dispatch-"))
    catalog = ROOT / "application_config.yaml"
    env = {
        **os.environ,
        "JOBCLOUD_HOME": str(tmp / "jc-home"),
        "JOBCLOUD_STORAGE": str(tmp / "store"),
        "JOBCLOUD_CONFIG": str(catalog),
        "DOCKER_HOST": engine_url() or "",
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update({k: env[k] for k in ("JOBCLOUD_HOME", "JOBCLOUD_STORAGE", "JOBCLOUD_CONFIG", "DOCKER_HOST")})
    from jobcloud.deployments.imaging.build import build

    build(["linefit"], log=lambda m: None)
    server = PrefectServer(home=tmp / "prefect-home")
    print(f"starting prefect server in {tmp} ...", file=sys.stderr)
    with server:
        os.environ["PREFECT_API_URL"] = server.api_url
        from jobcloud.blocks.store.factory import store_from_settings
        from jobcloud.deployments.deploy.sync import sync
        from jobcloud.flows.catalog import load_catalog

        store = store_from_settings()
        store.write_bytes("bench/config.yaml", (ROOT / "examples/linefit/config.yaml").read_bytes())
        store.write_bytes("bench/points.csv", (ROOT / "examples/linefit/points.csv").read_bytes())
        sync(load_catalog(catalog))
        results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "latency": []}
        for name in WORKERS if args.runs else ():
            print(f"latency, {WORKERS[name]} ...", file=sys.stderr)
            results["latency"].append(latency(server, env, tmp, name, args.runs))
            _save(results)
        results["throughput"] = []
        for name in (["stock"] if args.throughput_baseline else []) + ["jobcloud"] if args.jobs else []:
            print(f"throughput, {args.jobs} jobs, pool limit {args.limit}, {WORKERS[name]} ...", file=sys.stderr)
            results["throughput"].append(throughput(server, env, tmp, args.jobs, args.limit, name))
            _save(results)
    _print(results)
    _save(results)


def _save(results: dict[str, Any]) -> None:
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dispatch.json").write_text(json.dumps(results, indent=2))


def _print(results: dict[str, Any]) -> None:
    if not results["latency"]:
        print("(latency not measured)")
    print("\n| worker | runs | submit -> container start, median (min-max) | submit -> Completed, median | completed |")
    print("|---|---|---|---|---|")
    for r in results["latency"]:
        label = WORKERS[r["worker"]]
        print(
            f"| {label} | {r['runs']} | {r['start_median_s']} s ({r['start_min_s']}-{r['start_max_s']}) "
            f"| {r['done_median_s']} s | {r['completed']}/{r['runs']} |"
        )
    if results.get("throughput"):
        print(
            "\n| worker | jobs | pool limit | elapsed | jobs/min | Completed | manifests | max containers at once | max Pending+Running runs |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
    for t in results.get("throughput", []):
        print(
            f"| {WORKERS[t['worker']]} | {t['jobs']} | {t['pool_limit']} | {t['elapsed_s']} s | {t['jobs_per_min']} | {t['completed']} "
            f"| {t['manifests']} | {t['max_containers_at_once']} | {t['max_active_flow_runs']} |"
        )


if __name__ == "__main__":
    main()

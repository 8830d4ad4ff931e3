"""Throughput of a team server: jobs per minute with 1 and with 3 workers, on PostgreSQL and on
SQLite, in one run.

    DOCKER_HOST=unix:///run/podman/podman.sock .venv/bin/python bench/throughput.py [--jobs 200]

For each database: a throwaway PostgreSQL cluster (tests/integration/postgres.py) or SQLite in
PREFECT_HOME, a real `prefect server start` on it, `jobcloud deploy --limit cpu=8` of a tiny
busybox job (tests/e2e/team_stack.py), then for 1 and for 3 real `prefect worker start --pool
cpu` (type `jobcloud`): --jobs flow runs created at once, waited for until all are final.
jobs/min = jobs / (last run's end - first submission). Lost = submitted jobs that did not end
Completed with exactly one manifest of one attempt; twice = runs whose run_count is not 1.
Goal: 3 workers >= 2.5x one worker's jobs/min, 0 lost. Prints a table; writes
bench/results/throughput.json.

All workers of a run share this machine's cores: on a 2-core box the flow-run processes, the
server and the database compete for the same CPUs however many workers there are, so the
ratio here measures whether more workers add overhead or contention (lost, duplicated or
slower jobs), not how far three hosts scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.team_stack import DEPLOYMENT, TeamStack, max_overlap  # noqa: E402

GOAL_RATIO = 2.5


def _create(client: Any, deployment_id: Any) -> Any:
    """One flow run of the deployment; a refusal of a busy SQLite server (503) is retried."""
    from prefect.exceptions import PrefectHTTPStatusError

    for attempt in range(10):
        try:
            return client.create_flow_run_from_deployment(deployment_id, parameters={}, work_queue_name="priority-0")
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 503 or attempt == 9:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def one_round(stack: TeamStack, workers: int, jobs: int, timeout: float) -> dict[str, Any]:
    """Start ``workers`` workers, run ``jobs`` jobs through them, stop them; the figures."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tests.prefect_helpers import prefect_client

    assert stack.server is not None
    stack.start_workers(workers)
    try:
        with prefect_client(stack.server.api_url) as client:
            stack.wait_workers_online(client)
            deployment = client.read_deployment_by_name(DEPLOYMENT)
            t0 = datetime.now(UTC)
            ids = [_create(client, deployment.id).id for _ in range(jobs)]
            submitted_s = (datetime.now(UTC) - t0).total_seconds()
            deadline = time.monotonic() + timeout
            runs: list[Any] = []
            while time.monotonic() < deadline:
                try:
                    runs = _runs(client, ids, FlowRunFilter, FlowRunFilterId)
                except Exception:  # noqa: BLE001 - a busy (SQLite) server answered 503: ask again
                    time.sleep(2)
                    continue
                if all(r.state and r.state.is_final() for r in runs):
                    break
                time.sleep(2)
    finally:
        stack.stop_workers()
    ok = 0
    for r in runs:
        m = stack.manifest(str(r.id))
        ok += bool(r.state and r.state.is_completed() and m and m["attempts"] == 1 and m["job_id"] == str(r.id))
    ends = [r.end_time for r in runs if r.end_time]
    elapsed = (max(ends) - t0).total_seconds() if ends else float("nan")
    return {
        "database": stack.database,
        "workers": workers,
        "jobs": jobs,
        "pool_limit": stack.limit,
        "submitted_s": round(submitted_s, 1),
        "elapsed_s": round(elapsed, 1),
        "jobs_per_min": round(jobs / elapsed * 60, 1),
        "completed": sum(bool(r.state and r.state.is_completed()) for r in runs),
        "not_final": sum(not (r.state and r.state.is_final()) for r in runs),
        "lost": jobs - ok,
        "twice": sum(r.run_count != 1 for r in runs),
        "max_running": max_overlap((r.start_time, r.end_time) for r in runs if r.start_time and r.end_time),
        "states": sorted({r.state_name for r in runs if r.state_name}),
    }


def _runs(client: Any, ids: list[Any], flow_run_filter: Any, id_filter: Any) -> list[Any]:
    """The flow runs of ``ids``, 200 at a time (the server's page limit)."""
    runs: list[Any] = []
    for i in range(0, len(ids), 200):
        runs += client.read_flow_runs(flow_run_filter=flow_run_filter(id=id_filter(any_=ids[i : i + 200])), limit=200)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200, help="jobs per round")
    parser.add_argument("--limit", type=int, default=8, help="concurrency limit of pool cpu")
    parser.add_argument("--workers", default="1,3", help="worker counts, comma-separated (the first is the ratio's base)")
    parser.add_argument("--databases", default="postgresql,sqlite", help="postgresql and/or sqlite")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a round may take")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    from jobcloud.blocks.engine import engine_url
    from jobcloud.deployments.imaging.build import build

    docker_host = os.environ.get("DOCKER_HOST") or engine_url() or ""
    os.environ["DOCKER_HOST"] = docker_host
    build(["busybox"], log=lambda m: None)
    tmp = Path(tempfile.mkdtemp(prefix="jobcloud-bench-throughput-"))
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "rounds": []}
    for database in args.databases.split(","):
        stack = TeamStack(tmp / database, docker_host, database=database, limit=args.limit)
        print(f"{database}: starting PostgreSQL/Prefect server in {stack.tmp} ...", file=sys.stderr)
        try:
            stack.start()
            for n in counts:
                print(f"{database}: {args.jobs} jobs, {n} worker(s), pool limit {args.limit} ...", file=sys.stderr)
                results["rounds"].append(one_round(stack, n, args.jobs, args.timeout))
                print(f"  {results['rounds'][-1]}", file=sys.stderr)
                _save(results)
        finally:
            stack.stop()
    results["cpus"] = os.cpu_count()
    _save(results)
    _print(results, counts[0])


def _save(results: dict[str, Any]) -> None:
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(results, indent=2))


def _print(results: dict[str, Any], base_workers: int) -> None:
    rounds = results["rounds"]
    table = Table(title=f"tiny jobs through a real server and workers on one {results['cpus']}-CPU machine")
    for col in (
        "database",
        "workers",
        "jobs",
        "pool limit",
        "elapsed",
        "jobs/min",
        "Completed",
        "lost",
        "run twice",
        "max Running at once",
        "vs 1 worker",
    ):
        table.add_column(col)
    base = {r["database"]: r["jobs_per_min"] for r in rounds if r["workers"] == base_workers}
    for r in rounds:
        ratio = r["jobs_per_min"] / base[r["database"]] if base.get(r["database"]) else float("nan")
        table.add_row(
            r["database"], str(r["workers"]), str(r["jobs"]), str(r["pool_limit"]), f"{r['elapsed_s']} s",
            str(r["jobs_per_min"]), f"{r['completed']}/{r['jobs']}", str(r["lost"]), str(r["twice"]),
            str(r["max_running"]), f"{ratio:.2f}x",
        )  # fmt: skip
    Console(width=200).print(table)  # a log file or CI has no terminal width: never squeeze the table
    for database in dict.fromkeys(r["database"] for r in rounds):
        mine = [r for r in rounds if r["database"] == database]
        top = max(mine, key=lambda r: r["workers"])
        ratio = top["jobs_per_min"] / base[database] if base.get(database) else float("nan")
        lost = sum(r["lost"] + r["twice"] for r in mine)
        met = ratio >= GOAL_RATIO and lost == 0
        print(
            f"goal ({database}): {top['workers']} workers >= {GOAL_RATIO}x {base_workers} worker ({ratio:.2f}x), "
            f"0 lost or run twice ({lost}) -> {'met' if met else 'NOT met'}"
        )
    print("(all workers share this machine's CPUs: see the module docstring for what the ratio means here)")


if __name__ == "__main__":
    main()

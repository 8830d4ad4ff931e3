"""GA4GH TES through `jobcloud api serve`: how fast POST /tasks accepts tasks, and how long a tiny
task takes from submit to COMPLETE beside the same job through `jobcloud run`.

    DOCKER_HOST=unix:///run/podman/podman.sock .venv/bin/python bench/tes.py [--runs 20] [--posts 400] [--clients 20]

One stack: a Prefect server (SQLite, its own home), `jobcloud deploy` of a catalog with one tiny
entrypoint (`true` in the busybox image), one JobCloud worker on pool `cpu`, `jobcloud api serve`
on a real port, a local job store.

1. Latency on an idle worker, --runs of each, alternating: a TES task (one executor: `true` in
   busybox) from just before `POST /tasks` to the first `GET /tasks/{id}` (polled every 0.1 s)
   that says COMPLETE; and `jobcloud run tiny/v1/true --json` (the same container) from the
   command's start to its exit, which includes the CLI's own start. For both, also the flow
   run's own span on the server (created -> end time).
2. Throughput: the worker stopped first (so that the tasks only queue), --clients concurrent
   httpx clients POST tiny tasks until --posts are accepted: tasks accepted per second (Funnel's
   published figure: 5,000 in 93 s, about 54/s), each answer's latency (p50, p95), and any non-200.
Prints a table; writes bench/results/tes.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobcloud.deployments.server.processes import PrefectServer, Proc, start_worker  # noqa: E402
from tests.receivers import free_port  # noqa: E402 - the tests' free-port rule

TOKEN = "bench-token-0123456789abcdef"
BUSYBOX = "localhost/jobcloud/busybox:1"
CATALOG = f"""
tiny:
  v1:
    "true":
      description: Does nothing, in the busybox image (the TES bench's baseline job).
      app: {{cmd: ["true"]}}
      handler: {{image_url: "{BUSYBOX}"}}
"""
TASK = {"name": "bench-tiny", "executors": [{"image": BUSYBOX, "command": ["true"]}]}
FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}
JOBCLOUD = [sys.executable, "-m", "jobcloud.deployments.cli"]


class Stack:
    """The server, the worker and the API, started in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        (tmp / "catalog.yaml").write_text(CATALOG)
        (tmp / "keys.json").write_text(json.dumps({TOKEN: {"user": "bench", "role": "user"}}))
        self.server = PrefectServer(home=tmp / "prefect-home")
        base = {
            **{k: v for k, v in os.environ.items() if not k.startswith("JOBCLOUD_")},
            "JOBCLOUD_HOME": str(tmp / "jc-home"),
            "JOBCLOUD_STORAGE": str(tmp / "store"),
            "JOBCLOUD_CONFIG": str(tmp / "catalog.yaml"),
            "JOBCLOUD_API_KEYS_FILE": str(tmp / "keys.json"),
            "JOBCLOUD_API_RATE_PER_MINUTE": "1000000",
            "PYTHONPATH": str(ROOT),
        }
        self.server.start()
        self.env = self.server.env(base)
        deployed = subprocess.run([*JOBCLOUD, "deploy"], env=self.env, cwd=tmp, capture_output=True, text=True, timeout=300)
        if deployed.returncode != 0:
            raise SystemExit(f"jobcloud deploy failed:\n{deployed.stderr[-3000:]}")
        self.worker: Proc | None = start_worker(self.server, "cpu", self.env, tmp / "worker.log", name="bench-tes")
        port = free_port()
        log = open(tmp / "api.log", "ab")
        popen = subprocess.Popen(
            [*JOBCLOUD, "api", "serve", "--port", str(port)],
            env=self.env,
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.api = Proc(popen, tmp / "api.log")
        self.url = f"http://127.0.0.1:{port}"
        self._wait_api()

    def _wait_api(self, timeout: float = 90) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.api.alive():
                raise SystemExit(f"the API exited:\n{self.api.tail()}")
            try:
                if httpx.get(f"{self.url}/status", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"the API did not answer:\n{self.api.tail()}")

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def stop(self) -> None:
        self.api.stop()
        self.stop_worker()
        self.server.stop()


def _span(client: Any, run_id: str) -> float:
    """The flow run's created -> end time on the server, in seconds."""
    from uuid import UUID

    run = client.read_flow_run(UUID(run_id))
    return (run.end_time - run.created).total_seconds()


def tes_once(http: Any) -> tuple[float, str]:
    """Submit one tiny task; seconds to COMPLETE (polled every 0.1 s) and its id."""
    started = time.perf_counter()
    r = http.post("/ga4gh/tes/v1/tasks", json=TASK)
    r.raise_for_status()
    task_id = r.json()["id"]
    while True:
        state = http.get(f"/ga4gh/tes/v1/tasks/{task_id}").json()["state"]
        if state in FINAL:
            if state != "COMPLETE":
                raise SystemExit(f"task {task_id} ended {state}")
            return time.perf_counter() - started, task_id
        time.sleep(0.1)


def run_once(stack: Stack) -> tuple[float, str]:
    """`jobcloud run tiny/v1/true --json`; seconds from its start to its exit and the job id."""
    started = time.perf_counter()
    done = subprocess.run(
        [*JOBCLOUD, "run", "tiny/v1/true", "--json"], env=stack.env, cwd=stack.tmp, capture_output=True, text=True, timeout=300
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"jobcloud run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return took, json.loads(done.stdout)["id"]


def latency(stack: Stack, runs: int) -> dict[str, Any]:
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    out: dict[str, list[float]] = {"tes": [], "tes_server": [], "run": [], "run_server": []}
    with httpx.Client(base_url=stack.url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
        tes_once(http)  # one of each first: images and imports warm, as on a worker that ran before
        run_once(stack)
        with temporary_settings(updates={PREFECT_API_URL: stack.server.api_url}), get_client(sync_client=True) as client:
            for _ in range(runs):
                took, task_id = tes_once(http)
                out["tes"].append(took)
                out["tes_server"].append(_span(client, task_id))
                took, job_id = run_once(stack)
                out["run"].append(took)
                out["run_server"].append(_span(client, job_id))
    return {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)} for k, v in out.items()}


async def _post_many(url: str, posts: int, clients: int) -> dict[str, Any]:
    import httpx

    left = list(range(posts))
    answers: list[float] = []
    errors: dict[str, int] = {}

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=300) as http:
            while left:
                left.pop()
                t = time.perf_counter()
                try:
                    r = await http.post("/ga4gh/tes/v1/tasks", json=TASK)
                    outcome = str(r.status_code)
                except httpx.HTTPError as exc:  # counted, not fatal: what a client would see
                    outcome = type(exc).__name__
                answers.append(time.perf_counter() - t)
                if outcome != "200":
                    errors[outcome] = errors.get(outcome, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    took = time.perf_counter() - started
    answers.sort()
    return {
        "posts": posts,
        "clients": clients,
        "seconds": took,
        "per_s": (posts - sum(errors.values())) / took,
        "p50_ms": 1000 * answers[len(answers) // 2],
        "p95_ms": 1000 * answers[int(len(answers) * 0.95) - 1],
        "max_ms": 1000 * answers[-1],
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--posts", type=int, default=400)
    parser.add_argument("--clients", type=int, default=20)
    args = parser.parse_args()
    from jobcloud.deployments.imaging.build import build

    build(["linefit"], log=lambda m: None)  # the busybox base comes with it
    with tempfile.TemporaryDirectory(prefix="bench-tes-") as tmp:
        stack = Stack(Path(tmp))
        try:
            results: dict[str, Any] = {"load_before": os.getloadavg()[0], "latency": latency(stack, args.runs)}
            print(json.dumps(results["latency"]), flush=True)  # kept if the throughput part fails
            stack.stop_worker()
            results["throughput"] = asyncio.run(_post_many(stack.url, args.posts, args.clients))
            results["load_after"] = os.getloadavg()[0]
        finally:
            stack.stop()
    out = ROOT / "bench" / "results" / "tes.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    lat, thr = results["latency"], results["throughput"]
    print(f"{'submit -> COMPLETE (s)':34} median   min    max")
    for key, label in (
        ("tes", "TES task (POST -> COMPLETE)"),
        ("tes_server", "  its flow run, created -> end"),
        ("run", "`jobcloud run` (start -> exit)"),
        ("run_server", "  its flow run, created -> end"),
    ):
        v = lat[key]
        print(f"{label:34} {v['median']:6.2f} {v['min']:6.2f} {v['max']:6.2f}")
    print(
        f"POST /tasks, {thr['clients']} clients: {thr['per_s']:.1f} accepted/s ({thr['posts']} in {thr['seconds']:.1f} s), "
        f"p50 {thr['p50_ms']:.0f} ms, p95 {thr['p95_ms']:.0f} ms, max {thr['max_ms']:.0f} ms, errors {thr['errors'] or 'none'}"
    )
    print(f"load average: {results['load_before']:.1f} before, {results['load_after']:.1f} after; {out}")


if __name__ == "__main__":
    main()

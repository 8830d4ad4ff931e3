"""GA4GH TES through `jobcloud api serve`: how fast POST /tasks accepts tasks, and how long a tiny
task takes from submit to COMPLETE beside the same job through `jobcloud run`.

    DOCKER_HOST=unix:///run/podman/podman.sock .venv/bin/python bench/tes.py [--runs 20] [--posts 400]
        [--clients 20] [--postgres] [--baseline REV] [--rounds 1] [--profile]

One stack: a Prefect server (SQLite in its own home, or with --postgres a throwaway PostgreSQL
cluster, tests/integration/postgres.py), `jobcloud deploy` of a catalog with one tiny entrypoint
(`true` in the busybox image), one JobCloud worker on pool `cpu`, `jobcloud api serve` on a real
port, a local job store. With --baseline REV a second `jobcloud api serve` runs the code of git
revision REV (`git archive` into a temporary folder; nothing in this checkout changes) against the
same server, and the throughput part measures both, alternating which goes first each round.

1. Latency on an idle worker, --runs of each, alternating: a TES task (one executor: `true` in
   busybox) from just before `POST /tasks` to the first `GET /tasks/{id}` (polled every 0.1 s)
   that says COMPLETE; and `jobcloud run tiny/v1/true --json` (the same container) from the
   command's start to its exit, which includes the CLI's own start. For both, also the flow
   run's own span on the server (created -> end time).
2. Throughput: the worker stopped first (so that the tasks only queue), --clients concurrent
   httpx clients POST tiny tasks until --posts are accepted: tasks accepted per second (Funnel's
   published figure: 5,000 in 93 s, about 54/s), each answer's latency (p50, p95), any non-200,
   the machine's load average, and a check on the server: the flow runs that carry the pass's own
   TES tag are exactly the ids answered (none lost, none twice). After each pass the bench waits
   until the server has marked all queued runs Late (`settle`), so that no pass pays for the
   writes of the one before. --runs 0 skips part 1.
   --profile records the current API and the Prefect server with py-spy during each of the current
   code's passes (collapsed stacks, bench/results/tes-profile-*.txt).
Prints a table; writes bench/results/tes.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
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
from tests.e2e.api_process import serve_api, wait_answering  # noqa: E402 - the tests' API start and wait

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


def baseline_tree(rev: str, into: Path) -> Path:
    """The code of git revision ``rev`` under ``into``, importable as `jobcloud`: the folder to
    put on PYTHONPATH. `git archive` reads the repository only (no worktree, no index change);
    the editable install maps `jobcloud.<layer>` to this checkout's folders, so the tree gets a
    `jobcloud/` package of its own whose layers link to the archived ones (a plain path import,
    found before the editable finder)."""
    src = into / "src"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    root = into / "root"
    (root / "jobcloud").mkdir(parents=True)
    shutil.copy2(src / "jobcloud" / "__init__.py", root / "jobcloud" / "__init__.py")
    for layer in ("blocks", "flows", "deployments", "images"):
        (root / "jobcloud" / layer).symlink_to(src / layer)
    return root


class Stack:
    """The server (and its PostgreSQL), the worker and the API (and the baseline's), started in ``tmp``."""

    def __init__(self, tmp: Path, postgres: bool = False, baseline: Path | None = None) -> None:
        self.tmp = tmp
        (tmp / "catalog.yaml").write_text(CATALOG)
        (tmp / "keys.json").write_text(json.dumps({TOKEN: {"user": "bench", "role": "user"}}))
        self.postgres: Any = None
        self.apis: dict[str, tuple[Proc, str]] = {}
        self.worker: Proc | None = None
        database_url = None
        if postgres:
            from tests.integration.postgres import Postgres

            self.postgres = Postgres()  # set first: stop() cleans up after a failed start too
            database_url = self.postgres.start().url
        self.server = PrefectServer(home=tmp / "prefect-home", database_url=database_url)
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
        self.worker = start_worker(self.server, "cpu", self.env, tmp / "worker.log", name="bench-tes")
        self.url = self.start_api("current", self.env)
        if baseline is not None:
            # Its own state folder: the two APIs never share a rate limiter or submit lock.
            self.start_api("baseline", {**self.env, "PYTHONPATH": str(baseline), "JOBCLOUD_HOME": str(tmp / "jc-home-baseline")})

    def start_api(self, label: str, env: dict[str, str]) -> str:
        """`jobcloud api serve` with ``env`` on a free port (the end-to-end tests' helper); its URL
        once it answers."""
        api, url = serve_api(self.tmp, env, f"api-{label}")
        self.apis[label] = (api, url)
        wait_answering(api, url, timeout=90)
        return url

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def stop(self) -> None:
        for api, _ in self.apis.values():
            api.stop()
        self.stop_worker()
        self.server.stop()
        if self.postgres is not None:
            self.postgres.stop()


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


async def _post_many(url: str, posts: int, clients: int, tag: str) -> dict[str, Any]:
    """--clients clients POST tiny tasks (TES tag `bench-pass: <tag>`) until --posts were sent."""
    import httpx

    task = {**TASK, "tags": {"bench-pass": tag}}
    left = list(range(posts))
    answers: list[float] = []
    errors: dict[str, int] = {}
    ids: list[str] = []

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=300) as http:
            while left:
                left.pop()
                t = time.perf_counter()
                try:
                    r = await http.post("/ga4gh/tes/v1/tasks", json=task)
                    outcome = str(r.status_code)
                    if r.status_code == 200:
                        ids.append(r.json()["id"])
                except httpx.HTTPError as exc:  # counted, not fatal: what a client would see
                    outcome = type(exc).__name__
                answers.append(time.perf_counter() - t)
                if outcome != "200":
                    errors[outcome] = errors.get(outcome, 0) + 1

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    took = time.perf_counter() - started
    answers.sort()
    return {
        "posts": posts,
        "clients": clients,
        "seconds": took,
        "per_s": len(ids) / took,
        "p50_ms": 1000 * answers[len(answers) // 2],
        "p95_ms": 1000 * answers[int(len(answers) * 0.95) - 1],
        "max_ms": 1000 * answers[-1],
        "errors": errors,
        "ids": ids,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def check_landed(stack: Stack, tag: str, ids: list[str]) -> dict[str, int]:
    """The flow runs on the server that carry pass ``tag``'s TES tag against the ids answered:
    `lost` = answered but not there, `extra` = there but never answered (a task made twice, or
    made by a POST that was answered with an error)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"tes-tag:bench-pass={tag}"]))
    found: set[str] = set()
    with temporary_settings(updates={PREFECT_API_URL: stack.server.api_url}), get_client(sync_client=True) as client:
        while True:
            batch = client.read_flow_runs(flow_run_filter=flt, limit=200, offset=len(found))
            found |= {str(r.id) for r in batch}
            if len(batch) < 200:
                break
    answered = set(ids)
    return {
        "on_server": len(found),
        "answered_twice": len(ids) - len(answered),
        "lost": len(answered - found),
        "extra": len(found - answered),
    }


def settle(stack: Stack, timeout: float = 300) -> float:
    """Wait until the server has marked every queued run Late (its late-runs service does so 15 s
    after a run's scheduled start, one write each, competing with the creates for SQLite's one
    writer): a pass then never pays for the previous pass's runs. Seconds waited."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    flt = FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Scheduled"])))
    started = time.monotonic()
    with temporary_settings(updates={PREFECT_API_URL: stack.server.api_url}), get_client(sync_client=True) as client:
        while client.count_flow_runs(flow_run_filter=flt) and time.monotonic() - started < timeout:
            time.sleep(2)
    return time.monotonic() - started


class Profiler:
    """py-spy recording the current API and the Prefect server (and its subprocesses) while a
    pass runs; collapsed stacks under bench/results/."""

    def __init__(self, stack: Stack, name: str) -> None:
        self.procs: list[subprocess.Popen] = []
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        assert stack.server.proc is not None
        for label, pid in (("api", stack.apis["current"][0].popen.pid), ("server", stack.server.proc.popen.pid)):
            args = [py_spy, "record", "--format", "raw", "--rate", "50", "--subprocesses", "--nonblocking"]
            args += ["-o", str(out / f"tes-profile-{name}-{label}.txt"), "--pid", str(pid)]
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(2)  # py-spy writes its file on SIGINT
            proc.wait(60)


def throughput(stack: Stack, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each API's passes, alternating which goes first each round; the figures of each pass."""
    passes: list[dict[str, Any]] = []
    labels = list(stack.apis)
    for rnd in range(args.rounds):
        for label in labels if rnd % 2 == 0 else labels[::-1]:
            tag = f"{label}-{rnd}"
            profiler = Profiler(stack, tag) if args.profile and label == "current" else None
            try:
                figures = asyncio.run(_post_many(stack.apis[label][1], args.posts, args.clients, tag))
            finally:
                if profiler is not None:
                    profiler.stop()
            figures.update(api=label, round=rnd, **check_landed(stack, tag, figures.pop("ids")), settle_s=settle(stack))
            passes.append(figures)
            print(json.dumps(figures), flush=True)  # kept if a later pass fails
    return passes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="latency runs of each (0: skip the latency part)")
    parser.add_argument("--posts", type=int, default=400)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--postgres", action="store_true", help="the Prefect server on a throwaway PostgreSQL cluster")
    parser.add_argument("--baseline", metavar="REV", help="also measure the API of git revision REV (e.g. HEAD)")
    parser.add_argument("--rounds", type=int, default=1, help="throughput passes of each API")
    parser.add_argument("--profile", action="store_true", help="py-spy the API and the server during the current code's passes")
    args = parser.parse_args()
    from jobcloud.deployments.imaging.build import build

    build(["linefit"], log=lambda m: None)  # the busybox base comes with it
    with tempfile.TemporaryDirectory(prefix="bench-tes-") as tmp:
        baseline = baseline_tree(args.baseline, Path(tmp) / "baseline") if args.baseline else None
        stack = Stack(Path(tmp), postgres=args.postgres, baseline=baseline)
        try:
            results: dict[str, Any] = {
                "database": "postgresql" if args.postgres else "sqlite",
                "baseline": args.baseline,
                "load_before": os.getloadavg()[0],
            }
            if args.runs > 0:
                results["latency"] = latency(stack, args.runs)
                print(json.dumps(results["latency"]), flush=True)  # kept if the throughput part fails
            stack.stop_worker()
            results["throughput"] = throughput(stack, args)
            results["load_after"] = os.getloadavg()[0]
        finally:
            stack.stop()
    out = ROOT / "bench" / "results" / "tes.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    if "latency" in results:
        lat = results["latency"]
        print(f"{'submit -> COMPLETE (s)':34} median   min    max")
        for key, label in (
            ("tes", "TES task (POST -> COMPLETE)"),
            ("tes_server", "  its flow run, created -> end"),
            ("run", "`jobcloud run` (start -> exit)"),
            ("run_server", "  its flow run, created -> end"),
        ):
            v = lat[key]
            print(f"{label:34} {v['median']:6.2f} {v['min']:6.2f} {v['max']:6.2f}")
    for thr in results["throughput"]:
        print(
            f"{results['database']}, {thr['api']} (round {thr['round']}), POST /tasks, {thr['clients']} clients: "
            f"{thr['per_s']:.1f} accepted/s ({thr['posts']} in {thr['seconds']:.1f} s), p50 {thr['p50_ms']:.0f} ms, "
            f"p95 {thr['p95_ms']:.0f} ms, max {thr['max_ms']:.0f} ms, errors {thr['errors'] or 'none'}, "
            f"lost {thr['lost']}, extra {thr['extra']}, load {thr['load_before']:.1f} -> {thr['load_after']:.1f}"
        )
    print(f"load average: {results['load_before']:.1f} before, {results['load_after']:.1f} after; {out}")


if __name__ == "__main__":
    main()

"""Job arrays against a bare loop: elements per minute, CPU-seconds per element, the array
process's peak memory, lost and twice-run elements; the same work as separate jobs.

    DOCKER_HOST=unix:///run/podman/podman.sock .venv/bin/python bench/arrays.py [--elements 1000] [--parallel 4]
        [--separate 100] [--memory-elements 10000]

Each element: a 1 KiB input file staged in, a busybox container that sleeps 0.3 s and copies
it to its output, the output uploaded (local job store). In one run of this script:

- bare loop: `cp` input into a folder, `podman run --rm -v folder:/files busybox ...`, `cp`
  the output back; `--parallel` threads at once (the baseline: what a lab's own script does);
- array: `jobcloud run bench/v1/tiny --array-over inputs --parallel N` through a real Prefect
  server (SQLite) and one real `jobcloud` worker, timed from the command's start to its end;
- separate: `--separate` jobs of the same entrypoint submitted from one process with the
  Python API, timed from the first submission to the last job's end;
- memory: an array of `--memory-elements` elements of an entrypoint that reuses its outputs
  (`cache: true`: after the first element no container runs), so the flow process's own
  bookkeeping is what grows; its peak RSS is sampled every 0.2 s.

CPU-seconds per element are the whole machine's busy CPU time (/proc/stat) over the phase,
divided by its elements: engine, server, worker and flow processes all count, as they would on
a worker host. Goal: array >= 0.7x the bare loop's rate; peak RSS <= 400 MiB at 10,000
elements; 0 lost, 0 run twice. Prints a table; writes bench/results/arrays.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BUSYBOX = "localhost/jobcloud/busybox:1"
COMMAND = "sleep 0.3; cp /files/data/* /files/output/"
CATALOG = f"""
bench:
  v1:
    tiny:
      description: Sleeps 0.3 s and copies its 1 KiB input to its output.
      app: {{cmd: ["{COMMAND}"]}}
      handler:
        image_url: "{BUSYBOX}"
        files_down: {{data_ids: data}}
        files_up: {{output: output}}
      aws_resources: {{hardware: {{VCPU: 0.5, MEMORY: 64}}}}
    cached:
      description: The same, reusing an earlier element's outputs (cache) - for the memory figure.
      cache: true
      app: {{cmd: ["{COMMAND}"]}}
      handler:
        image_url: "{BUSYBOX}"
        files_down: {{data_ids: data}}
        files_up: {{output: output}}
"""
GOAL_RATIO = 0.7
GOAL_RSS_MIB = 400


def busy_cpu_s() -> float:
    """Seconds of CPU time the whole machine has spent not idle since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def engine_cli() -> str:
    return "podman" if shutil.which("podman") else "docker"


def bare_loop(inputs: Path, work: Path, count: int, parallel: int) -> dict[str, Any]:
    """cp in, `podman run --rm`, cp out; ``parallel`` at once."""
    cli = engine_cli()

    def one(i: int) -> bool:
        folder = work / str(i)
        (folder / "data").mkdir(parents=True)
        (folder / "output").mkdir()
        shutil.copy(inputs / f"e{i:05d}.bin", folder / "data")
        rc = subprocess.run(
            [cli, "run", "--rm", "-v", f"{folder}:/files", BUSYBOX, "sh", "-c", COMMAND], capture_output=True
        ).returncode  # fmt: skip
        dest = work / "results" / str(i)
        dest.mkdir(parents=True)
        for f in (folder / "output").iterdir():
            shutil.copy(f, dest)
        shutil.rmtree(folder)
        return rc == 0 and (dest / f"e{i:05d}.bin").is_file()

    cpu0, t0 = busy_cpu_s(), time.monotonic()
    with ThreadPoolExecutor(parallel) as pool:
        ok = list(pool.map(one, range(count)))
    elapsed = time.monotonic() - t0
    return _figures("bare loop (cp + podman run + cp)", count, elapsed, busy_cpu_s() - cpu0, lost=ok.count(False), twice=0)


def _figures(what: str, count: int, elapsed: float, cpu: float, **extra: Any) -> dict[str, Any]:
    return {
        "what": what,
        "elements": count,
        "elapsed_s": round(elapsed, 1),
        "per_min": round(count / elapsed * 60, 1),
        "cpu_s_per_element": round(cpu / count, 3),
        **extra,
    }


class RssSampler:
    """Peak RSS of the array's flow run process (the parent of its job guard) under ``home``."""

    def __init__(self, home: str) -> None:
        self.home, self.peak_kib, self.cpu_s, self._stop = home, 0, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        from tests.faults.conftest import processes_with

        pid = None
        while not self._stop.wait(0.2):
            try:
                if pid is None:
                    guards = [int(p.split()[0]) for p in processes_with(f"JOBCLOUD_HOME={self.home}") if "jobcloud.flows.job_guard" in p]
                    if guards:
                        pid = int(Path(f"/proc/{guards[0]}/stat").read_text().rsplit(") ", 1)[1].split()[1])
                    continue
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
                self.cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            except OSError:
                pid = None


def run_array(cli: Any, env: dict[str, str], entry: str, rows: list[str], parallel: int, count: int, timeout: float) -> dict[str, Any]:
    """`jobcloud run ENTRY ROWS...` (`--array-over PREFIX` or `--array FILE`), timed; lost and
    twice-run elements from the array's record and its task runs."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    from tests.prefect_helpers import prefect_client

    with RssSampler(env["JOBCLOUD_HOME"]) as rss:
        cpu0, t0 = busy_cpu_s(), time.monotonic()
        proc = cli("run", entry, *rows, "--parallel", str(parallel), "--json", timeout=int(timeout))
        elapsed = time.monotonic() - t0
        cpu = busy_cpu_s() - cpu0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"jobcloud run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout)
    # Each run of the array writes one row per element it ran (jobs/<id>/runs/<run>.json): an
    # index in two rows ran twice. The task runs the server shows are counted too (sorted by id:
    # paging an unsorted listing repeats and skips rows); the server ingests them from events,
    # so right after a large array it may still be behind.
    seen: dict[int, int] = {}
    for run_file in (Path(env["JOBCLOUD_STORAGE"]) / "jobs" / doc["array_id"] / "runs").glob("*.json"):
        for row in json.loads(run_file.read_text())["elements"]:
            seen[row["index"]] = seen.get(row["index"], 0) + 1
    twice = sum(1 for n in seen.values() if n > 1)
    lost = count - doc["counts"].get("Completed", 0)
    names: set[str] = set()
    with prefect_client(env["PREFECT_API_URL"]) as client:
        offset = 0
        while True:
            page = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=doc["runs"])), sort=TaskRunSort.ID_DESC, limit=200, offset=offset
            )
            names.update(r.name for r in page if r.name.startswith("element-"))
            if len(page) < 200:
                break
            offset += 200
    return _figures(
        f"array ({entry}, --parallel {parallel})",
        count,
        elapsed,
        cpu,
        lost=lost,
        twice=twice,
        peak_rss_mib=round(rss.peak_kib / 1024, 1),
        flow_cpu_s_per_element=round(rss.cpu_s / count, 3),
        task_runs_on_server=len(names),
    )


SEPARATE = """
import json, sys, time
import jobcloud
count, timeout = int(sys.argv[1]), float(sys.argv[2])
t0 = time.monotonic()
jobs = [jobcloud.submit("bench/v1/tiny", data=[f"inputs/e{i:05d}.bin"]) for i in range(count)]
states = [j.wait(timeout=timeout) for j in jobs]
print(json.dumps({"elapsed": time.monotonic() - t0, "completed": states.count("Completed")}))
"""


def separate_jobs(env: dict[str, str], count: int, timeout: float) -> dict[str, Any]:
    """``count`` jobs submitted from one process with the Python API, waited for (a process of
    its own: Prefect reads its API settings once per process)."""
    cpu0 = busy_cpu_s()
    proc = subprocess.run(
        [sys.executable, "-c", SEPARATE, str(count), str(timeout)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise SystemExit(f"separate jobs failed:\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    return _figures(
        "separate jobs (Python API, one worker)", count, doc["elapsed"], busy_cpu_s() - cpu0, lost=count - doc["completed"], twice=0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--elements", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--separate", type=int, default=100, help="separate jobs for comparison (0: skip)")
    parser.add_argument("--memory-elements", type=int, default=10000, help="elements of the memory array (0: skip)")
    parser.add_argument("--timeout", type=float, default=7200)
    args = parser.parse_args()

    from jobcloud.blocks.engine import engine_url
    from jobcloud.deployments.imaging.build import build
    from jobcloud.deployments.server.processes import PrefectServer, start_worker
    from tests.conftest import Cli

    docker_host = os.environ.get("DOCKER_HOST") or engine_url() or ""
    build(["busybox"], log=lambda m: None)
    tmp = Path(tempfile.mkdtemp(prefix="jobcloud-bench-arrays-"))
    store = tmp / "store"
    inputs = store / "inputs"
    inputs.mkdir(parents=True)
    count = max(args.elements, args.separate)
    for i in range(max(count, args.memory_elements)):
        (inputs / f"e{i:05d}.bin").write_bytes(os.urandom(1024))
    catalog = tmp / "application_config.yaml"
    catalog.write_text(CATALOG)
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "cpus": os.cpu_count(), "parallel": args.parallel, "rows": []}

    if args.elements:
        print(f"bare loop: {args.elements} elements, {args.parallel} at once ...", file=sys.stderr)
        results["rows"].append(bare_loop(inputs, tmp / "bare", args.elements, args.parallel))
        print(f"  {results['rows'][-1]}", file=sys.stderr)

    server = PrefectServer(home=tmp / "prefect-home")
    server.start()
    env = server.env(
        {
            **{k: v for k, v in os.environ.items() if not k.startswith("JOBCLOUD_")},
            "JOBCLOUD_HOME": str(tmp / "jc-home"),
            "JOBCLOUD_STORAGE": str(store),
            "JOBCLOUD_CONFIG": str(catalog),
            "DOCKER_HOST": docker_host,
            "PYTHONPATH": str(ROOT),
        }
    )
    worker = None
    try:
        cli = Cli(env=env, cwd=tmp)
        deployed = cli("deploy")
        if deployed.returncode != 0:
            raise SystemExit(deployed.stderr)
        worker = start_worker(server, "cpu", env, tmp / "worker.log", name="bench-arrays")
        time.sleep(3)
        print(f"array: {args.elements} elements ...", file=sys.stderr)
        sub = store / "sub"  # exactly the array's elements
        sub.mkdir()
        for i in range(args.elements):
            os.link(inputs / f"e{i:05d}.bin", sub / f"e{i:05d}.bin")
        prefix = "sub"
        if args.elements:
            results["rows"].append(
                run_array(cli, env, "bench/v1/tiny", ["--array-over", prefix], args.parallel, args.elements, args.timeout)
            )
            print(f"  {results['rows'][-1]}", file=sys.stderr)
        if args.separate:
            print(f"separate: {args.separate} jobs ...", file=sys.stderr)
            results["rows"].append(separate_jobs(env, args.separate, args.timeout))
            print(f"  {results['rows'][-1]}", file=sys.stderr)
        if args.memory_elements:
            print(f"memory: {args.memory_elements} elements reusing outputs ...", file=sys.stderr)
            # 8 distinct inputs, each under its own key: after the first 8, every element reuses one's
            # outputs and no container runs - what is left is the array's own bookkeeping.
            rows = tmp / "memory.jsonl"
            rows.write_text("".join(json.dumps({"data_ids": [f"inputs/e{i % 8:05d}.bin"]}) + "\n" for i in range(args.memory_elements)))
            # One shard: one flow process holds the whole array (by default 10,000 would be 10 runs).
            mem_row = run_array(
                cli, env, "bench/v1/cached", ["--array", str(rows), "--shards", "1"], args.parallel, args.memory_elements, args.timeout
            )
            results["rows"].append(mem_row)
            print(f"  {results['rows'][-1]}", file=sys.stderr)
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "arrays.json").write_text(json.dumps(results, indent=2))
    _print(results)


def _print(results: dict[str, Any]) -> None:
    rows = results["rows"]
    bare = [r for r in rows if r["what"].startswith("bare loop")]
    base = bare[0]["per_min"] if bare else float("nan")
    table = Table(title=f"1 KiB in, busybox 0.3 s, 1 KiB out; {results['parallel']} at once; one {results['cpus']}-CPU machine")
    for col in ("what", "elements", "elapsed", "per min", "vs bare loop", "CPU-s/element", "peak RSS (MiB)", "lost", "run twice"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["what"], str(r["elements"]), f"{r['elapsed_s']} s", str(r["per_min"]), f"{r['per_min'] / base:.2f}x",
            str(r["cpu_s_per_element"]), str(r.get("peak_rss_mib", "-")), str(r["lost"]), str(r["twice"]),
        )  # fmt: skip
    Console(width=200).print(table)
    array = next((r for r in rows if r["what"].startswith("array (bench/v1/tiny")), None)
    if array:
        ratio = array["per_min"] / base
        print(f"goal: array >= {GOAL_RATIO}x the bare loop ({ratio:.2f}x) -> {'met' if ratio >= GOAL_RATIO else 'NOT met'}")
    mem = next((r for r in rows if "cached" in r["what"]), None)
    if mem:
        ok = mem["peak_rss_mib"] <= GOAL_RSS_MIB
        print(
            f"goal: peak RSS <= {GOAL_RSS_MIB} MiB at {mem['elements']} elements ({mem['peak_rss_mib']} MiB) -> {'met' if ok else 'NOT met'}"
        )
    bad = sum(r["lost"] + r["twice"] for r in rows)
    print(f"goal: 0 lost, 0 run twice ({bad}) -> {'met' if bad == 0 else 'NOT met'}")


if __name__ == "__main__":
    main()

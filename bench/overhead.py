"""JobCloud's overhead over a plain container run, for a tiny job.

The same job (N small inputs, a container that exits at once) runs through
`jobcloud run --local` and through a plain baseline in the same run: copy the inputs into a
folder, `docker run` (here: the engine's CLI or the Docker SDK) with that folder mounted at
/files, copy the outputs back. Prints median and spread of each, and the overhead.

    DOCKER_HOST=... .venv/bin/python bench/overhead.py --reps 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/jobcloud/busybox:1"
CMD = "ls /files/data/inputs > /files/output/listing.txt"


def engine_cli() -> list[str]:
    """The engine's own CLI, talking to the same engine as DOCKER_HOST."""
    if shutil.which("docker") and Path("/var/run/docker.sock").exists():
        return ["docker"]
    return ["podman"]


def baseline(inputs: Path, work: Path, outputs: Path) -> float:
    t = time.perf_counter()
    files = work / "files"
    shutil.copytree(inputs, files / "data" / "inputs")
    (files / "output").mkdir(parents=True)
    subprocess.run(
        [*engine_cli(), "run", "--rm", "-v", f"{files}:/files", IMAGE, "/bin/sh", "-c", CMD],
        check=True,
        capture_output=True,
    )
    shutil.copytree(files / "output", outputs)
    elapsed = time.perf_counter() - t
    shutil.rmtree(work)
    shutil.rmtree(outputs)
    return elapsed


def jobcloud(env: dict[str, str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(
        [str(ROOT / ".venv/bin/jobcloud"), "run", "bench/v1/tiny", "--data", "inputs", "--local", "--json"],
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"jobcloud run failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout)
    assert result["state"] == "Completed", result
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--inputs", type=int, default=10)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="jobcloud-bench-"))
    inputs = tmp / "inputs"
    inputs.mkdir()
    for i in range(args.inputs):
        (inputs / f"in{i:02d}.txt").write_text(f"input {i}\n" * 10)
    catalog = {
        "bench": {
            "v1": {
                "tiny": {
                    "app": {"cmd": [CMD], "env": []},
                    "handler": {"image_url": IMAGE, "files_down": {"data_ids": "data"}, "files_up": {"output": "output"}},
                    "aws_resources": {"hardware": {"MEMORY": 64, "VCPU": 1, "GPU": 0}, "timeout": 60},
                }
            }
        }
    }
    (tmp / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    env = {**os.environ, "JOBCLOUD_CONFIG": str(tmp / "catalog.yaml"), "JOBCLOUD_STORAGE": str(tmp / "store")}
    env.setdefault("JOBCLOUD_HOME", str(Path.home() / ".jobcloud"))
    subprocess.run([str(ROOT / ".venv/bin/jobcloud"), "files", "put", str(inputs), ""], env=env, check=False, capture_output=True)
    subprocess.run(
        [str(ROOT / ".venv/bin/jobcloud"), "files", "put", *map(str, inputs.iterdir()), "inputs"], env=env, check=True, capture_output=True
    )
    # Warm-up: the first run starts the local Prefect server; it is reused afterwards.
    jobcloud(env)
    baseline(inputs, tmp / "w", tmp / "o")
    base, jc = [], []
    for _ in range(args.reps):
        base.append(baseline(inputs, tmp / "w", tmp / "o"))
        jc.append(jobcloud(env))
    shutil.rmtree(tmp, ignore_errors=True)

    def row(name: str, xs: list[float]) -> list[str]:
        return [name, f"{statistics.median(xs):.2f}", f"{min(xs):.2f}", f"{max(xs):.2f}", f"{statistics.pstdev(xs):.2f}"]

    table = Table(title=f"tiny job, {args.inputs} inputs, {args.reps} repetitions (seconds)")
    for col in ("path", "median", "min", "max", "stdev"):
        table.add_column(col)
    table.add_row(*row("baseline: cp + run + cp", base))
    table.add_row(*row("jobcloud run --local", jc))
    overhead = statistics.median(jc) - statistics.median(base)
    table.add_row("overhead (median)", f"{overhead:.2f}", "", "", "")
    Console().print(table)
    print(f"goal: overhead < 2 s median -> {'met' if overhead < 2 else 'NOT met'}")


if __name__ == "__main__":
    main()

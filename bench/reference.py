"""What JobCloud adds to the reference train job (torchfit, about a minute of training).

The same training (images/torchfit/sample/bench.yaml, the same image, command and limits)
runs, in alternating order, through
- `jobcloud run torchfit/v1/train --local --json` against the local Prefect server: its wall
  time as the user sees it, and the manifest's split into staging, container and upload;
- a plain baseline: copy the data and config into a folder, `podman run` (or `docker run`)
  with it mounted at /files, copy the model, output and log folders out.
Prints a table and the overhead; the goal is under 5 % for a job of about a minute.

    DOCKER_HOST=unix:///run/podman/podman.sock .venv/bin/python bench/reference.py [--reps 2] [--epochs 250]
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

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "images" / "torchfit" / "sample"
REF = "torchfit/v1/train"


def engine_cli() -> list[str]:
    """The engine's own CLI, talking to the same engine as DOCKER_HOST."""
    if shutil.which("docker") and Path("/var/run/docker.sock").exists():
        return ["docker"]
    return ["podman"]


def jc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobcloud.deployments.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def run_jobcloud(env: dict[str, str], epochs: int) -> dict[str, float]:
    """One train job through JobCloud: wall seconds and the manifest's timings."""
    t = time.perf_counter()
    proc = jc(
        env, "run", REF, "--config", "bench/bench.yaml", "--data", "bench/data", "--env", f"TORCHFIT_EPOCHS={epochs}", "--local", "--json"
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"jobcloud run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout)
    timings = result["manifest"]["timings"]
    from jobcloud.blocks.store.factory import store_from_settings

    os.environ.update({k: env[k] for k in ("JOBCLOUD_HOME", "JOBCLOUD_STORAGE")})
    metrics = json.loads(store_from_settings().read_bytes(f"jobs/{result['id']}/output/metrics.json"))
    return {
        "wall": wall,
        "flow": timings["total_s"],
        "staging": timings["staging_s"],
        "container": timings["container_s"],
        "upload": timings["upload_s"],
        "training": metrics["training_seconds"],
    }


def run_baseline(tmp: Path, image: str, shell_cmd: str, cpus: float | None, memory_mb: int | None, epochs: int) -> dict[str, float]:
    """The same training with cp + `podman run` + cp."""
    work, dest = tmp / "baseline-work", tmp / "baseline-out"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(dest, ignore_errors=True)
    t0 = time.perf_counter()
    files = work / "files"
    shutil.copytree(SAMPLE / "data", files / "data" / "data")
    (files / "config").mkdir(parents=True)
    shutil.copy2(SAMPLE / "bench.yaml", files / "config" / "bench.yaml")
    for d in ("model", "output", "log"):
        (files / d).mkdir()
    t1 = time.perf_counter()
    limits = [*(["--cpus", str(cpus)] if cpus else []), *(["--memory", f"{memory_mb}m"] if memory_mb else [])]
    subprocess.run(
        [
            *engine_cli(),
            "run",
            "--rm",
            *limits,
            "-e",
            f"TORCHFIT_EPOCHS={epochs}",
            "-v",
            f"{files}:/files",
            "-w",
            "/files",
            image,
            "/bin/sh",
            "-c",
            shell_cmd,
        ],
        check=True,
        capture_output=True,
    )
    t2 = time.perf_counter()
    for d in ("model", "output", "log"):
        shutil.copytree(files / d, dest / d)
    t3 = time.perf_counter()
    training = json.loads((dest / "output" / "metrics.json").read_text())["training_seconds"]
    shutil.rmtree(work, ignore_errors=True)
    return {"wall": t3 - t0, "flow": t3 - t0, "staging": t1 - t0, "container": t2 - t1, "upload": t3 - t2, "training": training}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2, help="repetitions of each path (alternating)")
    ap.add_argument("--epochs", type=int, default=None, help="override bench.yaml's epochs (default: its value)")
    args = ap.parse_args()

    import yaml

    from jobcloud.deployments.imaging.build import build
    from jobcloud.flows.catalog import EntrypointRef, load_catalog
    from jobcloud.flows.container_spec import shell_command

    epochs = args.epochs or int(yaml.safe_load((SAMPLE / "bench.yaml").read_text())["epochs"])
    entry = load_catalog(ROOT / "application_config.yaml").get(EntrypointRef.parse(REF))
    hw = entry.hardware.limits
    build(["torchfit"], log=lambda m: None)
    tmp = Path(tempfile.mkdtemp(prefix="jobcloud-bench-ref-"))
    env = {
        **os.environ,
        "JOBCLOUD_HOME": str(tmp / "home"),
        "JOBCLOUD_STORAGE": str(tmp / "store"),
        "JOBCLOUD_CONFIG": str(ROOT / "application_config.yaml"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PREFECT_API_URL", None)
    try:
        # The local Prefect server is started once, outside the timings (as for a user's later jobs).
        assert jc(env, "server", "start").returncode == 0
        assert jc(env, "files", "put", str(SAMPLE / "data"), str(SAMPLE / "bench.yaml"), "bench").returncode == 0
        runs: dict[str, list[dict[str, float]]] = {"baseline": [], "jobcloud": []}
        for rep in range(args.reps):
            order = ["baseline", "jobcloud"] if rep % 2 == 0 else ["jobcloud", "baseline"]
            for path in order:
                if path == "jobcloud":
                    r = run_jobcloud(env, epochs)
                else:
                    r = run_baseline(tmp, entry.handler.image_url, shell_command(entry)[2], hw.VCPU, hw.MEMORY, epochs)
                runs[path].append(r)
                print(f"rep {rep + 1} {path}: {r['wall']:.1f} s", file=sys.stderr)
    finally:
        jc(env, "server", "stop")
        shutil.rmtree(tmp, ignore_errors=True)

    def med(path: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[path])

    for r in runs["baseline"] + runs["jobcloud"]:
        r["rest"] = r["wall"] - r["training"]  # everything but the training loop itself
    cols = ("staging", "container", "upload", "flow", "wall", "training", "rest")
    table = Table(title=f"torchfit train, {epochs} epochs, {args.reps} repetitions each (median seconds)")
    for col in ("path", "staging", "container", "upload", "job total", "wall (user sees)", "training (in app)", "wall - training"):
        table.add_column(col, justify="right" if col != "path" else "left")
    table.add_row("baseline: cp + podman run + cp", *(f"{med('baseline', k):.2f}" for k in cols))
    table.add_row("jobcloud run --local", *(f"{med('jobcloud', k):.2f}" for k in cols))
    base = med("baseline", "wall")
    wall_over = med("jobcloud", "wall") - base
    # The training loop's speed varies with the machine's load (2 shared cores); what JobCloud
    # adds is the rest: staging, container start, log streaming, upload, manifest, process start.
    rest_over = med("jobcloud", "rest") - med("baseline", "rest")
    table.add_row(
        "JobCloud adds",
        "",
        "",
        "",
        "",
        f"{wall_over:+.2f} ({100 * wall_over / base:+.1f} %)",
        "",
        f"{rest_over:+.2f} ({100 * rest_over / base:+.1f} %)",
    )
    Console().print(table)
    for path in runs:
        print(
            f"{path} walls: "
            + ", ".join(f"{r['wall']:.1f}" for r in runs[path])
            + " s; training: "
            + ", ".join(f"{r['training']:.1f}" for r in runs[path])
            + " s"
        )
    # The overhead is a fixed cost (it does not grow with the training), so it is also given
    # against a job of one minute, whatever the training length this run used.
    minute = max(base, 60.0)
    print(
        f"JobCloud adds {rest_over:+.2f} s (median, wall minus training): {100 * rest_over / base:+.1f} % of this "
        f"run's {base:.1f} s baseline, {100 * rest_over / minute:+.1f} % of a {minute:.0f} s job "
        f"(goal < 5 %: {'met' if rest_over / minute < 0.05 else 'NOT met'}); wall difference {wall_over:+.2f} s"
    )


if __name__ == "__main__":
    main()

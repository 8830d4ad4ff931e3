"""In-container mode against host mode for the torchfit train job, and both against no JobCloud.

The same training (images/torchfit/sample/bench.yaml, the same image and command) runs, in
alternating order, through
- a plain baseline: copy the data and config into a folder, `podman run` (or `docker run`)
  with it mounted at /files, copy the model, output and log folders out;
- host mode: `jobcloud run` to a `jobcloud`-type pool served by a real worker (the flow runs on
  the worker host and starts the application's container through the engine);
- in-container mode: `jobcloud run` to a `docker`-type pool (`jobcloud deploy --pool-type
  cpu=docker`) served by Prefect's own Docker worker (the flow runs inside the application's
  image and runs the command as a subprocess).
Each mode has its own Prefect server and worker, started once outside the timings. The job
store is a local folder (a docker pool mounts it into the job's container at the same path).
Prints a table: wall time as the user sees it, the training loop's own seconds, and what each
mode adds over the baseline (wall minus training, so the machine's load on the training loop
does not count).

    DOCKER_HOST=unix:///run/podman/podman.sock .venv/bin/python bench/in_container.py [--reps 2] [--epochs 100]

The image's JobCloud is the one it was built with: `jobcloud images build torchfit --force`
after changing JobCloud's code.
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
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from reference import SAMPLE, run_baseline  # noqa: E402  (the same baseline as bench/reference.py)

REF = "torchfit/v1/train"
MODES = ("baseline", "host", "in-container")


class Mode:
    """One Prefect server, its pools deployed with one pool type, and one worker."""

    def __init__(self, name: str, pool_type: str, tmp: Path) -> None:
        from jobcloud.deployments.server.processes import PrefectServer

        self.name, self.pool_type, self.tmp = name, pool_type, tmp / name
        self.server = PrefectServer(home=self.tmp / "prefect-home")
        self.worker: Any = None
        self.env: dict[str, str] = {}

    def start(self, base: dict[str, str]) -> None:
        from jobcloud.deployments.server.processes import start_worker

        self.server.start()
        self.env = self.server.env({**base, "JOBCLOUD_HOME": str(self.tmp / "jc-home")})
        ok(jc(self.env, "deploy", "--pool-type", f"cpu={self.pool_type}", "--prefect-yaml", str(self.tmp / "none.yaml")))
        extra = ["--type", self.pool_type]
        self.worker = start_worker(self.server, "cpu", self.env, self.tmp / "worker.log", name=f"bench-{self.name}", extra_args=extra)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        self.server.stop()

    def run(self, epochs: int, store: Path) -> dict[str, float]:
        t = time.perf_counter()
        proc = jc(
            self.env, "run", REF, "--config", "bench/bench.yaml", "--data", "bench/data", "--env", f"TORCHFIT_EPOCHS={epochs}", "--json"
        )
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            sys.exit(f"{self.name}: jobcloud run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{self.worker.tail()}")
        job = json.loads(proc.stdout)["id"]
        manifest = json.loads((store / "jobs" / job / "manifest.json").read_text())
        metrics = json.loads((store / "jobs" / job / "output" / "metrics.json").read_text())
        t = manifest["timings"]
        return {
            "wall": wall,
            "flow": t["total_s"],
            "staging": t["staging_s"],
            "container": t["container_s"],
            "upload": t["upload_s"],
            "training": metrics["training_seconds"],
            "runner": manifest["runner"],
        }


def jc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobcloud.deployments.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True)


def ok(proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, proc.args))}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2, help="repetitions of each mode (alternating order)")
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
    tmp = Path(tempfile.mkdtemp(prefix="jobcloud-bench-incontainer-", dir="/var/tmp"))
    store = tmp / "store"
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "JOBCLOUD_"))},
        "JOBCLOUD_STORAGE": str(store),
        "JOBCLOUD_CONFIG": str(ROOT / "application_config.yaml"),
        "PYTHONPATH": str(ROOT),
    }
    modes = {"host": Mode("host", "jobcloud", tmp), "in-container": Mode("in-container", "docker", tmp)}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    try:
        for mode in modes.values():
            mode.start(base)
        ok(jc(modes["host"].env, "files", "put", str(SAMPLE / "data"), str(SAMPLE / "bench.yaml"), "bench"))
        for rep in range(args.reps):
            order = list(MODES) if rep % 2 == 0 else list(reversed(MODES))
            for name in order:
                if name == "baseline":
                    r: dict[str, Any] = run_baseline(tmp, entry.handler.image_url, shell_command(entry)[2], hw.VCPU, hw.MEMORY, epochs)
                else:
                    r = modes[name].run(epochs, store)
                runs[name].append(r)
                print(f"rep {rep + 1} {name}: {r['wall']:.1f} s (training {r['training']:.1f} s)", file=sys.stderr)
    finally:
        for mode in modes.values():
            mode.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(name: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in runs[name])

    for name in MODES:
        for r in runs[name]:
            r["rest"] = r["wall"] - r["training"]
    base_rest, base_wall = med("baseline", "rest"), med("baseline", "wall")
    table = Table(title=f"torchfit train, {epochs} epochs, {args.reps} repetitions each (median seconds)")
    for col in ("mode", "wall (user sees)", "training (in app)", "wall - training", "adds over baseline"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    labels = {
        "baseline": "baseline: cp + podman run + cp",
        "host": "host mode: jobcloud worker, container via the engine",
        "in-container": "in-container: Prefect Docker worker, flow in the image",
    }
    for name in MODES:
        adds = med(name, "rest") - base_rest
        table.add_row(
            labels[name],
            f"{med(name, 'wall'):.2f}",
            f"{med(name, 'training'):.2f}",
            f"{med(name, 'rest'):.2f}",
            "" if name == "baseline" else f"{adds:+.2f} s ({100 * adds / base_wall:+.1f} %)",
        )
    Console(width=150).print(table)
    for name in MODES:
        print(f"{name} walls: " + ", ".join(f"{r['wall']:.1f}" for r in runs[name]) + " s")


if __name__ == "__main__":
    main()

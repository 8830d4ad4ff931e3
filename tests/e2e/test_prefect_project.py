"""JobCloud installed into a Prefect project that has its own `flows`, `blocks` and
`deployments` packages: a real server, `jobcloud deploy`, a real worker started in the
project's folder with the project on its Python path, and a job that runs to Completed.

Before the one namespace, the project's `flows/catalog.py` shadowed JobCloud's and every
deployment failed to load (`cannot import name 'Catalog' from 'flows.catalog'`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobcloud.deployments.server.processes import PrefectServer, start_worker
from tests.conftest import ROOT, Cli

pytestmark = pytest.mark.e2e

# The project's own packages, named like JobCloud's rooms, with modules JobCloud also has.
PROJECT_FILES = {
    "flows/__init__.py": "",
    "flows/catalog.py": "from prefect import flow\n\n\n@flow\ndef hello() -> int:\n    return 1\n",
    "flows/job.py": "raise ImportError('the project flows.job was imported by JobCloud')\n",
    "blocks/__init__.py": "",
    "blocks/settings.py": "raise ImportError('the project blocks.settings was imported by JobCloud')\n",
    "deployments/__init__.py": "",
    "deployments/worker.py": "raise ImportError('the project deployments.worker was imported by JobCloud')\n",
}


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


def make_project(folder: Path) -> Path:
    for rel, text in PROJECT_FILES.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def test_the_projects_packages_and_jobcloud_import_side_by_side(tmp_path: Path) -> None:
    """The issue's reproduction: in the project, its `flows.catalog` is its own and JobCloud's
    catalog flows load."""
    project = make_project(tmp_path / "myproject")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import flows.catalog, jobcloud.flows.catalog_flows, jobcloud.blocks.settings, jobcloud.deployments.worker.fast_worker\n"
        "assert flows.catalog.hello.fn() == 1\n"
        "print(jobcloud.flows.catalog_flows.__name__)"
    )
    proc = _ok(subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True, timeout=120))
    assert proc.stdout.strip() == "jobcloud.flows.catalog_flows"


def test_a_worker_in_a_prefect_project_runs_a_jobcloud_job(engine: str, images: None, tmp_path: Path) -> None:
    project = make_project(tmp_path / "myproject")
    server = PrefectServer(home=tmp_path / "prefect-home")
    # The project's packages come first on every process's path, as in a project's own worker.
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    base.update(
        {
            "JOBCLOUD_HOME": str(tmp_path / "jc-home"),
            "JOBCLOUD_STORAGE": str(tmp_path / "store"),
            "JOBCLOUD_CONFIG": str(ROOT / "application_config.yaml"),
            "DOCKER_HOST": engine,
            "PYTHONPATH": str(project),
        }
    )
    server.start()
    worker = None
    try:
        env = server.env(base)
        cli = Cli(env=env, cwd=project)
        _ok(cli("deploy"))
        worker = start_worker(server, "cpu", env, tmp_path / "worker.log", name="project-cpu", cwd=project)
        examples = ROOT / "examples/linefit"
        _ok(cli("files", "put", str(examples / "config.yaml"), str(examples / "points.csv"), "examples"))
        run = cli("run", "linefit/v1/train", "--config", "examples/config.yaml", "--data", "examples/points.csv", "--json", timeout=300)
        assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\nworker log:\n{worker.tail(80)}"
        job = json.loads(run.stdout)
        assert job["state"] == "Completed"
        manifest = json.loads((tmp_path / "store" / "jobs" / job["id"] / "manifest.json").read_text())
        assert manifest["exit_code"] == 0
        assert "was imported by JobCloud" not in worker.tail(400)
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
    assert not server.proc.alive() and not worker.alive()

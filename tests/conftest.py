"""Shared fixtures: a real container engine, the example images, a real local Prefect server,
and a fresh job store per test. Nothing here is mocked."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.engine_helpers import labelled_containers

ROOT = Path(__file__).resolve().parent.parent
# The suite's commands ignore SIGTERM (a shell as PID 1), so each timeout would cost the whole
# stop grace (10 s): 1 s here, inherited by every CLI, server and worker process a test starts.
os.environ.setdefault("JOBCLOUD_STOP_GRACE_S", "1")
JOBCLOUD = [sys.executable, "-m", "jobcloud.deployments.cli"]


@pytest.fixture(scope="session")
def engine() -> str:
    """DOCKER_HOST of a real engine (Docker, or Podman started by scripts/engine.sh)."""
    proc = subprocess.run([str(ROOT / "scripts/engine.sh")], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"no container engine: {proc.stderr}")
    host = proc.stdout.strip().splitlines()[-1]
    os.environ["DOCKER_HOST"] = host
    return host


JOB_LABEL = "io.jobcloud.job-id"
LEFTOVER_WAIT_S = 20  # a job's guard may still be removing a container the job could not


def job_containers(host: str) -> dict[str, str]:
    """id -> job id of every container carrying JobCloud's job label on ``host``."""
    return {c.id: (c.attrs.get("Labels") or {}).get(JOB_LABEL, "") for c in labelled_containers(host, JOB_LABEL)}


@pytest.fixture(autouse=True)
def no_job_container_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that uses the engine ends with no container of a job it started."""
    if "engine" not in request.fixturenames:
        yield
        return
    host = request.getfixturevalue("engine")
    before = set(job_containers(host))
    yield
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while True:
        left = {cid: job for cid, job in job_containers(host).items() if cid not in before}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if left:
        import docker

        client = docker.DockerClient(base_url=host, version="1.41", timeout=30)
        for cid in left:
            client.containers.get(cid).remove(force=True)  # so the next test starts clean
        pytest.fail(f"containers of jobs left behind: {sorted(set(left.values()))}")


@pytest.fixture(scope="session", autouse=True)
def seeded_prefect_servers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every `PrefectServer` a test starts begins from one migrated, unused SQLite database, made
    once per session: about 10 s less per server. Not made where only unit tests run (none start one)."""
    if all(item.nodeid.startswith("tests/unit/") for item in request.session.items):
        return
    from jobcloud.deployments.server.processes import PrefectServer, migrated_database

    PrefectServer.seed_database = migrated_database(tmp_path_factory.mktemp("prefect-seed"))


@pytest.fixture(scope="session", autouse=True)
def no_temporary_server_at_exit() -> Iterator[None]:
    """Stop Prefect's temporary (ephemeral) server, where a test started one, while pytest still
    owns the terminal: left to its atexit hook it logs to a closed stream (`--- Logging error ---`)."""
    yield
    from prefect.server.api.server import SubprocessASGIServer

    SubprocessASGIServer().stop()  # the no-port instance is the ephemeral one; as Prefect's own fixtures do


@pytest.fixture(scope="session")
def images(engine: str) -> None:
    """The example images of images/images.yaml (busybox base, linefit)."""
    from jobcloud.deployments.imaging.build import build

    build(["linefit"], log=lambda m: None)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real local Prefect server (SQLite) for the whole session."""
    home = tmp_path_factory.mktemp("jobcloud-server-home")
    old = os.environ.get("JOBCLOUD_HOME")
    os.environ["JOBCLOUD_HOME"] = str(home)
    from jobcloud.deployments.server import local_server

    url = local_server.start(quiet=True)
    os.environ["PREFECT_API_URL"] = url
    if old is None:
        del os.environ["JOBCLOUD_HOME"]
    else:
        os.environ["JOBCLOUD_HOME"] = old
    yield url
    os.environ["JOBCLOUD_HOME"] = str(home)
    local_server.stop()


@dataclass
class Cli:
    """Runs `jobcloud` as a user would, in a separate process, with a given environment."""

    env: dict[str, str]
    cwd: Path

    def __call__(self, *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*JOBCLOUD, *args], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def jc_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh JobCloud home and job store for one test, set in this process too."""
    home = tmp_path / "jc-home"
    env = {
        "JOBCLOUD_HOME": str(home),
        "JOBCLOUD_STORAGE": str(tmp_path / "store"),
        "JOBCLOUD_CONFIG": str(ROOT / "application_config.yaml"),
        "PYTHONPATH": str(ROOT),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return {**os.environ, **env}


@pytest.fixture
def cli(jc_env: dict[str, str], tmp_path: Path) -> Cli:
    """`jobcloud` against this test's store (and the session's server, if one was asked for)."""
    return Cli(env=jc_env, cwd=tmp_path)


def pytest_report_header(config: pytest.Config) -> str:
    """Which Prefect (and friends) this run used, e.g. `prefect 3.8.8, prefect-docker 0.7.4, ...`."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in ("prefect", "prefect-docker", "docker", "fastapi", "s3fs", "prefect-aws", "gcsfs", "prefect-gcp"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} -")
    pins = ROOT / "constraints.txt"
    pinned = {}
    if pins.is_file():
        for line in pins.read_text().splitlines():
            if "==" in line and not line.lstrip().startswith("#"):
                n, _, v = line.strip().partition("==")
                pinned[n.lower().replace("_", "-")] = v
    if not pinned:
        src = "no constraints.txt"
    else:
        off = [p for p in parts if p.split(" ")[0] in pinned and p.split(" ")[1] != pinned[p.split(" ")[0]]]
        src = "as pinned in constraints.txt" if not off else "differs from constraints.txt: " + ", ".join(off)
    return ", ".join(parts) + f" ({src})"

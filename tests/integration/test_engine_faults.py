"""The container engine missing, vanishing mid-job, or unable to give GPUs, with the real engine
(Podman here): plain messages, exit 2 before anything starts, no container left behind; and
the negotiated API version remembered after a job."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.engine_helpers import labelled_containers

pytestmark = pytest.mark.integration

EXAMPLE = ROOT / "examples" / "linefit"
BUSYBOX = "localhost/jobcloud/busybox:1"


@pytest.fixture
def linefit_cli(prefect_api, images, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`jobcloud` with linefit under a name of its own (its labels and tags are this test's only)
    and its example inputs in the store."""
    app = f"lf{uuid.uuid4().hex[:8]}"
    catalog = yaml.safe_load((ROOT / "application_config.yaml").read_text())
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({app: catalog["linefit"]}))
    cli.env["JOBCLOUD_CONFIG"] = str(tmp_path / "catalog.yaml")
    monkeypatch.setenv("JOBCLOUD_CONFIG", str(tmp_path / "catalog.yaml"))
    assert cli("files", "put", str(EXAMPLE / "points.csv"), "data").returncode == 0
    assert cli("files", "put", str(EXAMPLE / "config.yaml"), "config").returncode == 0
    cli.app = app  # type: ignore[attr-defined]
    return cli


TRAIN_INPUTS = ("--data", "data/points.csv", "--config", "config/config.yaml")


def _jobs_of(cli, app: str) -> list:
    proc = cli("jobs", "ls", "--app", app, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["jobs"]


def _containers_labelled(app: str) -> list:
    return labelled_containers(None, f"io.jobcloud.application={app}")


def test_no_engine_exits_2_before_any_job(linefit_cli, tmp_path: Path) -> None:
    linefit_cli.env["DOCKER_HOST"] = "unix:///nonexistent.sock"
    proc = linefit_cli("run", f"{linefit_cli.app}/v1/train", *TRAIN_INPUTS, "--local")
    assert proc.returncode == 2, proc.stderr
    msg = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "no container engine answers at unix:///nonexistent.sock (DOCKER_HOST)" in msg
    assert "No such file or directory" in msg and "Traceback" not in proc.stderr
    linefit_cli.env["DOCKER_HOST"] = os.environ["DOCKER_HOST"]
    assert _jobs_of(linefit_cli, linefit_cli.app) == []  # no flow run was created


def test_gpu_request_on_an_engine_without_gpus_exits_2_before_anything(linefit_cli) -> None:
    from jobcloud.blocks.engine import docker_client, gpu_support

    if gpu_support(docker_client()).available:
        pytest.skip("this engine can give GPUs")
    proc = linefit_cli("run", f"{linefit_cli.app}/v1/train", *TRAIN_INPUTS, "--gpu", "1", "--local")
    assert proc.returncode == 2, proc.stderr
    msg = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "the job asks for 1 GPU(s) but the container engine at" in msg
    assert "offers none" in msg and "--gpu 0" in msg and "Traceback" not in proc.stderr
    assert _jobs_of(linefit_cli, linefit_cli.app) == []
    assert _containers_labelled(linefit_cli.app) == []


def test_run_container_refuses_gpus_before_create(engine: str, images) -> None:
    """The same check inside the flow (server-mode jobs): no container is ever created."""
    from jobcloud.blocks.engine import docker_client, gpu_support
    from jobcloud.blocks.errors import GpuUnavailableError
    from jobcloud.flows.container_run import run_container
    from jobcloud.flows.container_spec import ContainerSpec

    client = docker_client()
    if gpu_support(client).available:
        pytest.skip("this engine can give GPUs")
    app = f"gpu{uuid.uuid4().hex[:8]}"
    spec = ContainerSpec(
        image=BUSYBOX,
        command=["true"],
        host_files=tempfile.gettempdir(),
        gpus=2,
        labels={"io.jobcloud.job-id": app, "io.jobcloud.application": app},
    )
    with pytest.raises(GpuUnavailableError, match="asks for 2 GPU"):
        run_container(client, spec, on_line=lambda line: None)
    assert _containers_labelled(app) == []


def test_api_version_is_remembered_after_a_job(linefit_cli, jc_env: dict[str, str]) -> None:
    from jobcloud.blocks.engine import sdk_api_version

    proc = linefit_cli("run", f"{linefit_cli.app}/v1/train", *TRAIN_INPUTS, "--local", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    cache = json.loads((Path(jc_env["JOBCLOUD_HOME"]) / "engine-api.json").read_text())
    entry = cache[os.environ["DOCKER_HOST"]]
    server, ours = entry["server_api_version"], sdk_api_version()
    as_tuple = lambda v: tuple(map(int, v.split(".")))  # noqa: E731
    assert entry["api_version"] == min(server, ours, key=as_tuple)


class _Proxy:
    """Forwards a unix socket to the real engine's, until `cut` drops it like a dying engine."""

    def __init__(self, path: str, target: str) -> None:
        self.path, self.target = path, target
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen(16)
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.listener.close()
        os.unlink(self.path)
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


@pytest.fixture
def proxy(engine: str) -> Iterator[_Proxy]:
    if not engine.startswith("unix://"):
        pytest.skip("the proxy stands in front of a unix socket")
    d = tempfile.mkdtemp(prefix="jc-px-", dir="/tmp")
    p = _Proxy(f"{d}/engine.sock", engine[len("unix://") :])
    yield p
    try:
        p.cut()
    except OSError:
        pass
    shutil.rmtree(d, ignore_errors=True)


def test_losing_the_engine_mid_run_is_one_plain_sentence(proxy: _Proxy, images, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobcloud.blocks.engine import docker_client
    from jobcloud.blocks.errors import ContainerEngineError
    from jobcloud.flows.container_run import run_container
    from jobcloud.flows.container_spec import ContainerSpec

    real_host = os.environ["DOCKER_HOST"]
    monkeypatch.setenv("DOCKER_HOST", f"unix://{proxy.path}")
    client = docker_client()
    app = f"lost{uuid.uuid4().hex[:8]}"
    spec = ContainerSpec(
        image=BUSYBOX,
        command=["/bin/sh", "-c", "echo up; sleep 60"],
        host_files=tempfile.gettempdir(),
        labels={"io.jobcloud.job-id": app, "io.jobcloud.application": app},
        timeout=120,
    )
    started = threading.Event()
    errors: list[BaseException] = []

    def job() -> None:
        try:
            run_container(client, spec, on_line=lambda line: None, on_start=lambda cid: started.set())
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            errors.append(exc)

    worker = threading.Thread(target=job, daemon=True)
    try:
        worker.start()
        assert started.wait(60)
        time.sleep(0.5)
        proxy.cut()
        worker.join(30)
        assert not worker.is_alive()
        (exc,) = errors
        assert isinstance(exc, ContainerEngineError) and type(exc) is ContainerEngineError
        assert str(exc).startswith(f"lost the container engine at unix://{proxy.path} (DOCKER_HOST) while the container ran: ")
        assert "ConnectionError" not in str(exc) and "urllib3" not in str(exc)
    finally:
        # The engine itself never went away: remove what this test left (a sweeper's job in life).
        monkeypatch.setenv("DOCKER_HOST", real_host)
        for c in _containers_labelled(app):
            c.remove(force=True)

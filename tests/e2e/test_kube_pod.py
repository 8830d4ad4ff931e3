"""A Kubernetes pod that really runs: no Kubernetes API server runs here, but `podman kube play`
runs a v1 Pod. `jobcloud deploy --pool-type cpu=kubernetes` makes the pool and the deployment on
a real Prefect server; a job is submitted (`jobcloud run --no-wait`); prefect-kubernetes' own job
configuration (`KubernetesWorkerJobConfiguration.resolve_for_flow_run`, what its worker calls for
each flow run) renders the Job it would create for that flow run; the Job's pod template is run
with `podman kube play`. The image, command, environment and resources are the ones a cluster
would get; only what a cluster differs in is adapted (each adaptation says so where it is made).
The job store is S3 (SeaweedFS, a store block), as a cluster's would be: nothing of it is
adapted. The flow run ends Completed on the test's server with its outputs in the store."""

from __future__ import annotations

import copy
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobcloud.deployments.pools.templates import IN_CONTAINER_COMMAND
from jobcloud.deployments.server.processes import PrefectServer
from tests.conftest import ROOT, Cli
from tests.e2e.docker_stack import ok
from tests.e2e.test_docker_pool import current_image  # noqa: F401 - current_image is a fixture
from tests.integration.seaweed import Seaweed

pytestmark = pytest.mark.e2e

POOL = "cpu"
STORE_BLOCK = "kube-store"
TRAIN_CPU, TRAIN_MEMORY_MB = 2, 2048  # application_config.yaml's torchfit/v1/train hardware


async def render_job_manifest(flow_run_id: str, pool: str) -> dict[str, Any]:
    """The Kubernetes Job that prefect-kubernetes' worker would create for this flow run: the
    work pool's base job template with the deployment's (and the flow run's) job variables,
    prepared for the flow run by the worker's own job configuration class. Run it in a process
    whose Prefect settings are a worker's (PREFECT_API_URL of the server): the worker passes
    its own settings into the job's environment."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending
    from prefect.utilities.engine import propose_state
    from prefect_kubernetes.worker import KubernetesWorker

    async with get_client() as client:
        flow_run = await client.read_flow_run(uuid.UUID(flow_run_id))
        work_pool = await client.read_work_pool(pool)
        assert work_pool.type == "kubernetes", work_pool.type
        # As the worker does before it submits a flow run: Scheduled -> Pending.
        state = await propose_state(client, Pending(), flow_run_id=flow_run.id)
        assert state.is_pending(), state
        configuration = await KubernetesWorker.job_configuration.resolve_for_flow_run(
            flow_run, client=client, work_pool=work_pool, worker_name="kube-pod-e2e"
        )
    return configuration.job_manifest


def pod_of(job: dict[str, Any], name: str) -> dict[str, Any]:
    """The v1 Pod of ``job``'s pod template, adapted to a single host without a cluster."""
    template = copy.deepcopy(job["spec"]["template"])
    meta = template.get("metadata") or {}
    spec = template["spec"]
    # Adaptation: a cluster names the Job's pod from the Job's generateName; a Pod that podman
    # plays needs a name of its own.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}},
        "spec": spec,
    }
    # Adaptation: the pod shares the host's network, as a cluster's pod reaches its Prefect
    # server and S3 endpoint by their addresses; here both listen on the host's 127.0.0.1.
    spec["hostNetwork"] = True
    for container in spec["containers"]:
        # Adaptation: the image exists only in this host's engine (no registry): never pull.
        container["imagePullPolicy"] = "Never"
    # Not carried: the Job's own fields (activeDeadlineSeconds, backoffLimit,
    # ttlSecondsAfterFinished) belong to the Job controller, which no plain pod has.
    return pod


def _podman(engine: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """podman against the test's engine (the socket the images were built through)."""
    url = ["--url", engine] if engine.startswith("unix://") else []
    return subprocess.run(["podman", *url, *args], capture_output=True, text=True, timeout=timeout)


def _container_state(engine: str, name: str) -> dict[str, Any]:
    proc = _podman(engine, "container", "inspect", name, timeout=60)
    if proc.returncode != 0:
        return {}
    return json.loads(proc.stdout)[0]


class KubeStack:
    def __init__(self, server: PrefectServer, env: dict[str, str], tmp: Path, seaweed: Seaweed, bucket: str) -> None:
        self.server, self.env, self.tmp, self.seaweed, self.bucket = server, env, tmp, seaweed, bucket
        self.cli = Cli(env=env, cwd=tmp)

    def manifest(self, job_id: str) -> dict[str, Any]:
        body = self.seaweed.client().get_object(Bucket=self.bucket, Key=f"jc/jobs/{job_id}/manifest.json")["Body"].read()
        return json.loads(body)

    def keys(self, prefix: str) -> set[str]:
        resp = self.seaweed.client().list_objects_v2(Bucket=self.bucket, Prefix=f"jc/{prefix}")
        return {o["Key"].removeprefix("jc/") for o in resp.get("Contents", [])}


@pytest.fixture(scope="module")
def stack(engine: str, current_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeStack]:  # noqa: F811
    if shutil.which("podman") is None:
        pytest.skip("`podman kube play` needs Podman")
    tmp = tmp_path_factory.mktemp("kube-pod")
    seaweed = Seaweed(tmp / "seaweed").start()
    bucket = seaweed.make_bucket(f"jobs-{uuid.uuid4().hex[:10]}")
    catalog = yaml.safe_load((ROOT / "application_config.yaml").read_text())
    torchfit = catalog["torchfit"]
    for entry in torchfit["v1"].values():
        entry["handler"]["image_url"] = current_image
    path = tmp / "application_config.yaml"
    path.write_text(yaml.safe_dump({"torchfit": torchfit}))
    server = PrefectServer(home=tmp / "prefect-home")
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOBCLOUD_"))},
        "JOBCLOUD_HOME": str(tmp / "jc-home"),
        "JOBCLOUD_STORAGE": f"block:{STORE_BLOCK}",
        "JOBCLOUD_CONFIG": str(path),
        "DOCKER_HOST": engine,
        "PYTHONPATH": str(ROOT),
    }
    server.start()
    try:
        env = server.env(base)
        creds = seaweed.env()
        save = (
            "from prefect_aws import AwsCredentials\n"
            "from jobcloud.blocks.store.store_block import JobStoreBlock\n"
            f"JobStoreBlock(url='s3://{bucket}/jc', endpoint_url='{seaweed.endpoint}', aws_credentials="
            f"AwsCredentials(aws_access_key_id='{creds['AWS_ACCESS_KEY_ID']}', "
            f"aws_secret_access_key='{creds['AWS_SECRET_ACCESS_KEY']}', region_name='us-east-1')).save('{STORE_BLOCK}')\n"
        )
        register = [sys.executable, "-m", "prefect", "block", "register", "-m", "jobcloud.blocks.store.store_block"]
        ok(subprocess.run(register, env=env, capture_output=True, text=True, timeout=120))
        ok(subprocess.run([sys.executable, "-c", save], env=env, capture_output=True, text=True, timeout=120))
        cli = Cli(env=env, cwd=tmp)
        ok(cli("deploy", "--pool-type", f"{POOL}=kubernetes", "--catalog", str(path), "--prefect-yaml", str(tmp / "none.yaml")))
        sample = ROOT / "images/torchfit/sample"
        ok(cli("files", "put", str(sample / "data"), str(sample / "config.yaml"), "samples/torchfit"))
        yield KubeStack(server, env, tmp, seaweed, bucket)
    finally:
        server.stop()
        seaweed.stop()


def _render(stack: KubeStack, job_id: str) -> dict[str, Any]:
    code = (
        "import asyncio, json, sys\n"
        "from tests.e2e.test_kube_pod import render_job_manifest\n"
        "print(json.dumps(asyncio.run(render_job_manifest(sys.argv[1], sys.argv[2]))))\n"
    )
    proc = ok(
        subprocess.run([sys.executable, "-c", code, job_id, POOL], env=stack.env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_kubernetes_pod_of_a_job_runs_it_to_completed(stack: KubeStack, engine: str, current_image: str) -> None:  # noqa: F811
    t0 = time.monotonic()
    job_id = ok(
        stack.cli("run", "torchfit/v1/train", "--config", "samples/torchfit/config.yaml", "--data", "samples/torchfit/data", "--no-wait")
    ).stdout.strip()
    job = _render(stack, job_id)

    # What a cluster would get, as prefect-kubernetes renders it.
    assert job["kind"] == "Job" and job["spec"]["activeDeadlineSeconds"] > 3600
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never"
    (container,) = spec["containers"]
    assert container["image"] == current_image
    assert container["args"] == shlex.split(IN_CONTAINER_COMMAND)
    want = {"cpu": str(TRAIN_CPU), "memory": f"{TRAIN_MEMORY_MB}Mi"}
    assert container["resources"]["requests"] == want and container["resources"]["limits"] == want
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PREFECT__FLOW_RUN_ID"] == job_id
    assert env["PREFECT_API_URL"] == stack.server.api_url
    assert env["JOBCLOUD_STORAGE"] == f"block:{STORE_BLOCK}" and env["JOBCLOUD_RUNNER"] == "process"
    assert "JOBCLOUD_CONFIG" not in env  # what the job runs travels with its deployment

    name = f"jobcloud-kube-{job_id[:8]}"
    pod = pod_of(job, name)
    manifest = stack.tmp / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump(pod, sort_keys=False))
    ctr = f"{name}-{container['name']}"
    final: dict[str, Any] = {}
    try:
        played = _podman(engine, "kube", "play", str(manifest))
        assert played.returncode == 0, f"podman kube play failed:\n{played.stdout}\n{played.stderr}\n{manifest.read_text()}"
        state = _container_state(engine, ctr)
        # The pod's resources are the container's limits in the engine.
        assert state["HostConfig"]["Memory"] == TRAIN_MEMORY_MB * 1024 * 1024, state["HostConfig"]
        assert state["HostConfig"]["CpuQuota"] == TRAIN_CPU * state["HostConfig"]["CpuPeriod"], state["HostConfig"]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            final = _container_state(engine, ctr)
            if final and final["State"]["Status"] in {"exited", "stopped"}:
                break
            time.sleep(2)
        logs = _podman(engine, "logs", ctr, timeout=60)
        tail = (logs.stdout + logs.stderr)[-4000:]
        assert final and final["State"]["Status"] in {"exited", "stopped"}, f"pod still running after 600 s:\n{tail}"
        assert final["State"]["ExitCode"] == 0, f"exit {final['State']['ExitCode']}:\n{tail}"
    finally:
        down = _podman(engine, "kube", "down", str(manifest), timeout=120)
        _podman(engine, "pod", "rm", "-f", "--ignore", name, timeout=120)
        gone = _podman(engine, "pod", "exists", name, timeout=60)
        assert gone.returncode != 0, f"pod {name} left behind: {down.stderr}"

    shown = json.loads(ok(stack.cli("jobs", "show", job_id, "--json")).stdout)
    assert shown["state"] == "Completed", (shown, tail)
    m = stack.manifest(job_id)
    assert m["runner"] == "process" and m["definition"] == "deployment" and m["exit_code"] == 0
    keys = stack.keys(f"jobs/{job_id}/")
    assert f"jobs/{job_id}/output/loss_curve.png" in keys, keys
    assert f"jobs/{job_id}/log/container.log" in keys
    assert any(k.startswith(f"jobs/{job_id}/artifact/") for k in keys), keys
    print(f"kube pod: torchfit train Completed in {time.monotonic() - t0:.1f} s (submit to outputs)")

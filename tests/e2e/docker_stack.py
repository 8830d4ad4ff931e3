"""In-container mode's stack, for tests/e2e/test_docker_pool.py and bench/cancel.py: an image of
torchfit with this checkout's JobCloud in its venv, and a real Prefect server, SeaweedFS as the
job store (an S3 block: a container gets the store's settings from the pool and nothing else),
`jobcloud deploy` of a catalog with each pool's worker type, and one real worker per pool
(`prefect worker start --pool cpu --type docker` is prefect-docker's DockerWorker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from jobcloud.deployments.server.processes import PrefectServer, Proc, start_worker
from tests.conftest import ROOT, Cli
from tests.engine_helpers import labelled_containers
from tests.integration.seaweed import Seaweed

BASE_IMAGE = "localhost/jobcloud/torchfit:1"
TEST_IMAGE = "localhost/jobcloud-test/torchfit-current:1"
PREFECT_FLOW_RUN_LABEL = "io.prefect.flow-run-id"
STORE_BLOCK = "e2e-store"


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


def build_current_image(engine: str, tag: str = TEST_IMAGE, base: str = BASE_IMAGE) -> str:
    """``base`` (torchfit) with this checkout's JobCloud in its venv, as ``tag``: a runtime image
    copies JobCloud when it is built, and a test or bench must run the code under test."""
    import docker

    from jobcloud.deployments.imaging.build import stage_jobcloud_source

    client = docker.DockerClient(base_url=engine)
    with tempfile.TemporaryDirectory(prefix="jobcloud-test-image-", dir="/var/tmp") as tmp:
        ctx = Path(tmp)
        stage_jobcloud_source(ctx / "jobcloud")
        (ctx / "Dockerfile").write_text(
            f"FROM {base}\nCOPY jobcloud /stage/jobcloud\n"
            "RUN /opt/jobcloud/venv/bin/pip install -q --no-deps --no-build-isolation --force-reinstall "
            "--disable-pip-version-check --no-cache-dir /stage/jobcloud && rm -rf /stage\n"
        )
        client.images.build(path=str(ctx), tag=tag, rm=True, forcerm=True)
    return tag


def remove_image(engine: str, tag: str) -> None:
    """Remove ``tag`` (best effort: an image still in use stays)."""
    import docker

    try:
        docker.DockerClient(base_url=engine).images.remove(tag, force=True)
    except Exception:  # noqa: BLE001 - in use by nothing after the module; best effort
        pass


@contextmanager
def current_image(engine: str, tag: str = TEST_IMAGE) -> Iterator[str]:
    """`build_current_image`, removed again at the end."""
    build_current_image(engine, tag)
    try:
        yield tag
    finally:
        remove_image(engine, tag)


class DockerStack:
    """A started stack: its server, workers (by pool), environment, folder and store."""

    def __init__(
        self, server: PrefectServer, workers: dict[str, Proc], env: dict[str, str], tmp: Path, seaweed: Seaweed, bucket: str
    ) -> None:
        self.server, self.workers, self.env, self.tmp, self.seaweed, self.bucket = server, workers, env, tmp, seaweed, bucket
        self.cli = Cli(env=env, cwd=tmp)

    @property
    def worker(self) -> Proc:
        """The `cpu` pool's worker (else the first one)."""
        return self.workers.get("cpu") or next(iter(self.workers.values()))

    def manifest(self, job_id: str) -> dict[str, Any]:
        body = self.seaweed.client().get_object(Bucket=self.bucket, Key=f"jc/jobs/{job_id}/manifest.json")["Body"].read()
        return json.loads(body)

    def keys(self, prefix: str) -> set[str]:
        resp = self.seaweed.client().list_objects_v2(Bucket=self.bucket, Prefix=f"jc/{prefix}")
        return {o["Key"].removeprefix("jc/") for o in resp.get("Contents", [])}


@contextmanager
def docker_stack(
    engine: str, tmp: Path, catalog: dict[str, Any], pool_types: dict[str, str] | None = None, worker_env: dict[str, str] | None = None
) -> Iterator[DockerStack]:
    """Start the stack in ``tmp`` for ``catalog`` (an application_config.yaml as a dict).

    ``pool_types``: pool -> worker type (default `{"cpu": "docker"}`); each pool named gets
    `jobcloud deploy --pool-type POOL=TYPE` and one worker `--type TYPE`. ``worker_env``: extra
    environment of the workers (and of the stack's commands). Everything stops at the end.
    """
    pool_types = pool_types or {"cpu": "docker"}
    seaweed = Seaweed(tmp / "seaweed").start()
    server = PrefectServer(home=tmp / "prefect-home")
    workers: dict[str, Proc] = {}
    try:
        bucket = seaweed.make_bucket(f"jobs-{uuid.uuid4().hex[:10]}")
        path = tmp / "application_config.yaml"
        path.write_text(yaml.safe_dump(catalog))
        base = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOBCLOUD_"))},
            "JOBCLOUD_HOME": str(tmp / "jc-home"),
            "JOBCLOUD_STORAGE": f"block:{STORE_BLOCK}",
            "JOBCLOUD_CONFIG": str(path),
            "DOCKER_HOST": engine,
            "PYTHONPATH": str(ROOT),
            **(worker_env or {}),
        }
        server.start()
        env = server.env(base)
        # The store as a block: what a container needs of it comes from the Prefect server.
        save = (
            "from prefect_aws import AwsCredentials\n"
            "from jobcloud.blocks.store.store_block import JobStoreBlock\n"
            f"JobStoreBlock(url='s3://{bucket}/jc', endpoint_url='{seaweed.endpoint}', aws_credentials="
            f"AwsCredentials(aws_access_key_id='{seaweed.env()['AWS_ACCESS_KEY_ID']}', "
            f"aws_secret_access_key='{seaweed.env()['AWS_SECRET_ACCESS_KEY']}', region_name='us-east-1')).save('{STORE_BLOCK}')\n"
        )
        register = [sys.executable, "-m", "prefect", "block", "register", "-m", "jobcloud.blocks.store.store_block"]
        ok(subprocess.run(register, env=env, capture_output=True, text=True, timeout=120))
        ok(subprocess.run([sys.executable, "-c", save], env=env, capture_output=True, text=True, timeout=120))
        cli = Cli(env=env, cwd=tmp)
        types = [arg for pool, kind in pool_types.items() for arg in ("--pool-type", f"{pool}={kind}")]
        ok(cli("deploy", *types, "--catalog", str(path), "--prefect-yaml", str(tmp / "none.yaml")))
        for pool, kind in pool_types.items():
            workers[pool] = start_worker(
                server, pool, env, tmp / f"worker-{pool}.log", name=f"e2e-{kind}-{pool}", extra_args=["--type", kind]
            )
        yield DockerStack(server, workers, env, tmp, seaweed, bucket)
    finally:
        for worker in workers.values():
            worker.stop()
        server.stop()
        seaweed.stop()


def flow_run_containers(engine: str, job_id: str) -> list[Any]:
    """The containers a docker worker started for flow run ``job_id`` (its Prefect label)."""
    return labelled_containers(engine, f"{PREFECT_FLOW_RUN_LABEL}={job_id}")

"""Whole linefit jobs with the job store on a real S3 server (SeaweedFS): `jobcloud run
--local` with JOBCLOUD_STORAGE=s3://... and the standard AWS_* variables; result reuse."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
import yaml

from tests.integration.seaweed import Seaweed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "linefit"


@pytest.fixture
def s3_cli(prefect_api, images, cli, seaweed: Seaweed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`jobcloud` with the store in a fresh bucket; linefit's train caches its results."""
    bucket = seaweed.make_bucket(f"jobs-{uuid.uuid4().hex[:10]}")
    catalog = yaml.safe_load((ROOT / "application_config.yaml").read_text())
    catalog["linefit"]["v1"]["train"]["cache"] = True
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    env = {**seaweed.env(), "JOBCLOUD_STORAGE": f"s3://{bucket}/jobcloud", "JOBCLOUD_CONFIG": str(tmp_path / "catalog.yaml")}
    cli.env.update(env)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cli.bucket = bucket  # type: ignore[attr-defined]
    return cli


def _run(cli, *args: str) -> dict:
    proc = cli("run", *args, "--local", "--json")
    assert proc.stdout.strip(), proc.stderr
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, (result.get("message"), proc.stderr[-2000:])
    return result


def test_linefit_on_s3_end_to_end_then_reused(s3_cli, seaweed: Seaweed, tmp_path: Path) -> None:
    assert s3_cli("files", "put", str(EXAMPLE / "points.csv"), "data").returncode == 0
    assert s3_cli("files", "put", str(EXAMPLE / "config.yaml"), "config").returncode == 0
    assert s3_cli("files", "put", str(EXAMPLE / "query.csv"), "data").returncode == 0

    first = _run(s3_cli, "linefit/v1/train", "--data", "data/points.csv", "--config", "config/config.yaml")
    job = first["id"]
    m = first["manifest"]
    assert m["state"] == "Completed" and m["reused_from"] is None
    inputs = {i["key"]: i for i in m["inputs"]}
    assert inputs["data/points.csv"]["files"][0]["sha256"] == hashlib.sha256((EXAMPLE / "points.csv").read_bytes()).hexdigest()
    outputs = {o["key"]: o for o in m["outputs"]}
    assert f"jobs/{job}/log/container.log" in outputs
    assert any(k.startswith(f"jobs/{job}/artifact/") for k in outputs)
    # Every output is really in the bucket, with the size and SHA-256 the manifest says.
    c = seaweed.client()
    for key, o in outputs.items():
        body = c.get_object(Bucket=s3_cli.bucket, Key=f"jobcloud/{key}")["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (o["size"], o["sha256"])
    stored = json.loads(c.get_object(Bucket=s3_cli.bucket, Key=f"jobcloud/jobs/{job}/manifest.json")["Body"].read())
    assert stored["job_id"] == job

    # Same image, command, env and inputs: the outputs are reused, the container does not run.
    second = _run(s3_cli, "linefit/v1/train", "--data", "data/points.csv", "--config", "config/config.yaml")
    m2 = second["manifest"]
    assert m2["reused_from"] == job and m2["state"] == "Completed"
    assert m2["timings"]["container_s"] == 0
    assert sorted((o["key"].split("/", 2)[2], o["sha256"]) for o in m2["outputs"]) == sorted(
        (o["key"].split("/", 2)[2], o["sha256"]) for o in m["outputs"]
    )
    # The reused job's artifact is a valid input of a later job.
    pred = _run(s3_cli, "linefit/v1/predict", "--artifact", f"jobs/{second['id']}/artifact", "--data", "data/query.csv")
    assert pred["manifest"]["outputs"]

    # Another environment value is another result: the container runs again.
    third = _run(s3_cli, "linefit/v1/train", "--data", "data/points.csv", "--config", "config/config.yaml", "--env", "LINEFIT_EPOCHS=3")
    assert third["manifest"]["reused_from"] is None


def test_bad_credentials_stop_the_job_before_it_starts(s3_cli, tmp_path: Path) -> None:
    s3_cli.env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    proc = s3_cli("run", "linefit/v1/train", "--data", "data/points.csv", "--config", "config/config.yaml", "--local")
    assert proc.returncode == 2, proc.stderr
    assert "refused" in proc.stderr and "credentials" in proc.stderr
    assert "Traceback" not in proc.stderr

"""The JobStoreBlock on a real Prefect server: registered with `prefect block register`,
saved with prefect-aws credentials, selected with JOBCLOUD_STORAGE=block:<name>, and used by
`jobcloud files` against a real SeaweedFS. Secrets never show in the CLI's output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.integration.seaweed import ACCESS_KEY, SECRET_KEY, Seaweed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_block_registers_saves_and_selects_the_store(prefect_api: str, seaweed: Seaweed, cli, tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)}
    reg = subprocess.run(
        [sys.executable, "-m", "prefect", "block", "register", "-m", "jobcloud.blocks.store.store_block"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert reg.returncode == 0, reg.stdout + reg.stderr
    assert "jobcloud-job-store" in reg.stdout.replace("\n", " ") or "JobCloud Job Store" in reg.stdout

    from prefect_aws import AwsCredentials

    from jobcloud.blocks.store.store_block import JobStoreBlock

    bucket = seaweed.make_bucket(f"blk-{uuid.uuid4().hex[:10]}")
    name = f"lab-store-{uuid.uuid4().hex[:6]}"
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Prefect's settings may have been read before the server fixture set PREFECT_API_URL.
    with temporary_settings({PREFECT_API_URL: prefect_api}):
        JobStoreBlock(
            url=f"s3://{bucket}/jobcloud",
            endpoint_url=seaweed.endpoint,
            region="us-east-1",
            aws_credentials=AwsCredentials(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY),
        ).save(name)

    # No AWS_* variables at all: everything comes from the block.
    for k in [k for k in cli.env if k.startswith("AWS_")]:
        del cli.env[k]
    cli.env["PREFECT_API_URL"] = prefect_api
    cli.env["JOBCLOUD_STORAGE"] = f"block:{name}"
    (tmp_path / "points.csv").write_text("x,y\n1,2\n")
    put = cli("files", "put", str(tmp_path / "points.csv"), "data", "--json")
    assert put.returncode == 0, put.stderr
    assert SECRET_KEY not in put.stdout + put.stderr
    ls = cli("files", "ls", "data", "--json")
    assert ls.returncode == 0, ls.stderr
    assert [e["key"] for e in json.loads(ls.stdout)["entries"]] == ["data/points.csv"]
    body = seaweed.client().get_object(Bucket=bucket, Key="jobcloud/data/points.csv")["Body"].read()
    assert body == b"x,y\n1,2\n"

    cli.env["JOBCLOUD_STORAGE"] = "block:no-such-block"
    missing = cli("files", "ls")
    assert missing.returncode == 2 and "no JobStoreBlock named 'no-such-block'" in missing.stderr

"""In-container mode end to end on Prefect's own Docker worker: `jobcloud deploy --pool-type
cpu=docker`, a real `prefect worker start --pool cpu --type docker` (prefect-docker's
DockerWorker) on the engine here, the job store on SeaweedFS (an S3 block: the container gets
the store's settings from the pool and nothing else), the torchfit train -> predict pair run
with the flow inside the application's image; cancel and timeout leave no container and no
process behind."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.e2e.docker_stack import TEST_IMAGE, DockerStack, docker_stack
from tests.e2e.docker_stack import current_image as build_current_image
from tests.e2e.docker_stack import flow_run_containers as _flow_run_containers
from tests.e2e.docker_stack import ok as _ok
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

EXTRA = {
    "sleepy": {
        "v1": {
            "nap": {
                "description": "Sleeps (to cancel it while it runs).",
                "app": {"cmd": ["echo going to sleep; sleep 300"]},
                "handler": {"image_url": TEST_IMAGE, "files_up": {"log": "log"}},
            },
            "each": {
                "description": "An array's element: copies its data; 'fail' fails, 'slow' runs past the timeout.",
                "app": {
                    "cmd": [
                        "v=$(cat /files/data/*); echo element $v; case $v in fail*) exit 3;; slow*) sleep 60;; esac; cp /files/data/* /files/output/"
                    ]
                },
                "handler": {"image_url": TEST_IMAGE, "files_down": {"data_ids": "data"}, "files_up": {"output": "output", "log": "log"}},
                "aws_resources": {"timeout": 3},
            },
            "late": {
                "description": "Runs past its timeout.",
                "app": {"cmd": ["echo working; sleep 300 & wait"]},
                "handler": {"image_url": TEST_IMAGE, "files_up": {"log": "log"}},
                "aws_resources": {"timeout": 3},
            },
        }
    }
}


@pytest.fixture(scope="module")
def current_image(engine: str, images: None) -> Iterator[str]:
    """torchfit with this checkout's JobCloud in its venv: a runtime image copies JobCloud when
    it is built, and this test must run the code under test."""
    with build_current_image(engine) as tag:
        yield tag


@pytest.fixture(scope="module")
def stack(engine: str, current_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerStack]:
    tmp = tmp_path_factory.mktemp("docker-pool")
    catalog = yaml.safe_load((ROOT / "application_config.yaml").read_text())
    torchfit = catalog["torchfit"]
    for entry in torchfit["v1"].values():
        entry["handler"]["image_url"] = current_image
    with docker_stack(engine, tmp, {"torchfit": torchfit, **EXTRA}, {"cpu": "docker"}) as built:
        sample = ROOT / "images/torchfit/sample"
        _ok(built.cli("files", "put", str(sample / "data"), str(sample / "config.yaml"), "samples/torchfit"))
        yield built


def test_docker_pool_has_the_entrypoints_image_and_resources(stack: DockerStack) -> None:
    from tests.prefect_helpers import prefect_client

    with prefect_client(stack.server.api_url) as client:
        assert client.read_work_pool("cpu").type == "docker"
        dep = client.read_deployment_by_name("torchfit-train/torchfit-v1-train")
        assert dep.job_variables["image"] == TEST_IMAGE
        assert "JOBCLOUD_ENTRYPOINT" in dep.job_variables["env"]


def test_train_then_predict_in_container(stack: DockerStack, engine: str) -> None:
    proc = _ok(
        stack.cli(
            "run", "torchfit/v1/train", "--config", "samples/torchfit/config.yaml", "--data", "samples/torchfit/data", "--json", timeout=600
        )
    )
    train = json.loads(proc.stdout)
    assert train["state"] == "Completed", (train, stack.worker.tail())
    m = stack.manifest(train["id"])
    assert m["runner"] == "process" and m["definition"] == "deployment"
    keys = stack.keys(f"jobs/{train['id']}/")
    assert any(k.startswith(f"jobs/{train['id']}/artifact/") for k in keys), keys
    assert f"jobs/{train['id']}/log/container.log" in keys
    assert f"jobs/{train['id']}/output/loss_curve.png" in keys
    proc = _ok(
        stack.cli(
            "run",
            "torchfit/v1/predict",
            "--artifact",
            f"jobs/{train['id']}/artifact",
            "--data",
            "samples/torchfit/data",
            "--json",
            timeout=600,
        )
    )
    pred = json.loads(proc.stdout)
    assert pred["state"] == "Completed", (pred, stack.worker.tail())
    assert any(k.endswith("predictions.csv") for k in stack.keys(f"jobs/{pred['id']}/output/"))
    for job in (train["id"], pred["id"]):
        assert _wait_gone(engine, job), f"the flow-run container of {job} was left behind"


def _wait_gone(engine: str, job_id: str, within: float = 30) -> bool:
    try:
        return wait_until(lambda: not _flow_run_containers(engine, job_id), within, 0.5)
    except AssertionError:
        return False  # the callers say which job's container was left


def _wait_state(stack: DockerStack, job_id: str, states: set[str], within: float = 120) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def reached() -> dict[str, Any] | None:
        shown = json.loads(_ok(stack.cli("jobs", "show", job_id, "--json")).stdout)
        seen.append(shown)
        return shown if shown["state"] in states or shown.get("phase") in states else None

    return wait_until(reached, within, 0.5, message=lambda: f"job {job_id} in {sorted(states)}: {seen[-1:]}\n{stack.worker.tail()}")


def test_cancel_in_container_leaves_nothing(stack: DockerStack, engine: str) -> None:
    job_id = _ok(stack.cli("run", "sleepy/v1/nap", "--no-wait")).stdout.strip()
    _wait_state(stack, job_id, {"running"}, within=180)
    t = time.monotonic()
    _ok(stack.cli("jobs", "cancel", job_id))
    shown = _wait_state(stack, job_id, {"Cancelled", "Completed", "Failed", "Crashed"}, within=90)
    took = time.monotonic() - t
    assert shown["state"] == "Cancelled", shown
    assert _wait_gone(engine, job_id), "the cancelled job's container was left behind"
    print(f"cancel in-container: Cancelled {took:.1f} s after `jobs cancel`")
    if os.environ.get("JOBCLOUD_TEST_VERBOSE"):
        print(shown)
        print(stack.cli("jobs", "logs", job_id).stdout[-4000:])
        print(stack.worker.tail(80))


def test_timeout_in_container_leaves_nothing(stack: DockerStack, engine: str) -> None:
    proc = stack.cli("run", "sleepy/v1/late", "--json", timeout=300)
    result = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    m = stack.manifest(result["id"])
    assert m["state"] == "TimedOut" and m["timed_out"] and m["runner"] == "process"
    assert f"jobs/{result['id']}/log/container.log" in stack.keys(f"jobs/{result['id']}/")
    assert _wait_gone(engine, result["id"])


def test_array_in_container_with_a_failure_a_timeout_and_retry_failed(stack: DockerStack, engine: str) -> None:
    """An array of 50 in one flow run inside the application's image: elements one by one (one
    /files), each its own job under jobs/<array>/<index>/ in the S3 store."""
    folder = stack.tmp / "sweep"
    folder.mkdir()
    for i in range(50):
        (folder / f"e{i:02d}.txt").write_text({7: "fail", 21: "slow"}.get(i, f"ok {i}") + "\n")
    _ok(stack.cli("files", "put", str(folder), "arrays"))
    proc = stack.cli("run", "sleepy/v1/each", "--array-over", "arrays/sweep", "--json", timeout=900)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    array_id = doc["array_id"]
    assert doc["counts"] == {"Completed": 48, "Failed": 1, "TimedOut": 1}, doc
    keys = stack.keys(f"jobs/{array_id}/")
    assert f"jobs/{array_id}/3/output/e03.txt" in keys and f"jobs/{array_id}/array.json" in keys
    assert f"jobs/{array_id}/7/output/e07.txt" not in keys  # the failed element's earlier files never leak in
    assert f"jobs/{array_id}/8/output/e07.txt" not in keys and f"jobs/{array_id}/8/output/e08.txt" in keys
    assert stack.manifest(f"{array_id}/21")["state"] == "TimedOut" and stack.manifest(f"{array_id}/21")["runner"] == "process"
    assert _wait_gone(engine, array_id)
    (folder / "e07.txt").write_text("ok 7\n")
    (folder / "e21.txt").write_text("ok 21\n")
    _ok(stack.cli("files", "put", str(folder / "e07.txt"), str(folder / "e21.txt"), "arrays/sweep"))
    again = json.loads(_ok(stack.cli("run", "sleepy/v1/each", "--retry-failed", array_id, "--json", timeout=600)).stdout)
    assert again["counts"] == {"Completed": 50}
    assert f"jobs/{array_id}/21/output/e21.txt" in stack.keys(f"jobs/{array_id}/21/")

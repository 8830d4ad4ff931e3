"""Jobs' Prefect events, and the documented train -> predict automation, on a real
`prefect server start` (no mocks).

`jobcloud deploy` makes the deployments; the automation is the Python snippet of
docs/notifications.md, run as written (names changed from torchfit to this test's app); a real
train job (`jobcloud run --local`, in-container mode so no engine is needed) must then emit its
phase events and make the server start predict with the train job's artifact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from jobcloud.deployments.server.processes import PrefectServer
from tests.integration.test_notifications import Env
from tests.prefect_helpers import prefect_client, prefect_settings
from tests.receivers import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "notifications.md"
FIRE_WAIT_S = 60

CHAIN = {
    "chain": {
        "v1": {
            "train": {
                "app": {"cmd": ["echo weights > model/model.bin; echo 'loss 0.1' > output/metrics.txt"]},
                "handler": {
                    "image_url": "localhost/not/needed:1",
                    "files_down": {"data_ids": "data"},
                    "files_up": {"output": "output", "artifact": "model", "log": "log"},
                },
            },
            "predict": {
                "app": {"cmd": ["cat artifact/*/model.bin > output/used.txt"]},
                "handler": {
                    "image_url": "localhost/not/needed:1",
                    "files_down": {"data_ids": "data", "artifact_ids": "artifact"},
                    "files_up": {"output": "output"},
                },
                "required_inputs": ["artifact_ids"],
            },
        }
    }
}


def documented_automation() -> str:
    """The Python block of docs/notifications.md under "Start `predict` when a `train` job completes"."""
    text = DOC.read_text()
    section = text[text.index("### Start `predict`") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    srv = PrefectServer(home=tmp_path_factory.mktemp("events") / "ph", port=free_port())
    try:
        yield srv.start()
    finally:
        srv.stop()


def _events(client: Any, run_id: str) -> list[Any]:
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    page = client.read_events(
        filter=EventFilter(
            event=EventNameFilter(prefix=["jobcloud.job."]), resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"])
        ),
        limit=50,
    )
    return sorted(page.events, key=lambda e: e.occurred)


def test_a_completed_train_job_starts_predict_with_its_artifact(
    server: PrefectServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    env = Env(server, tmp_path)
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(CHAIN))
    (tmp_path / "points.csv").write_text("x,y\n1,2\n")
    assert env("files", "put", str(tmp_path / "points.csv"), "samples/chain/data").returncode == 0
    deployed = env("deploy")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    # The documented automation, as written, for this test's app.
    snippet = documented_automation().replace("torchfit", "chain")
    with prefect_settings(server.api_url):
        exec(compile(snippet, str(DOC), "exec"), {})
    with prefect_client(server.api_url) as client:
        [auto] = client.read_automations_by_name("chain-predict-after-train")
        assert auto.enabled
        predict = client.read_deployment_by_name("chain-predict/chain-v1-predict")

    # The triggers service loads new automations within a few seconds; the job takes longer.
    job, _ = env.run_job("chain/v1/train", "--data", "samples/chain/data/points.csv")
    assert job["state"] == "Completed", job
    train_id = job["id"]

    with prefect_client(server.api_url) as client:
        # The job's phase events, with the application, version and entrypoint related.
        events = wait_until(lambda: (e := _events(client, train_id)) and len(e) >= 5 and e, 30, 0.5, message="the job's events")
        names = [e.event for e in events]
        assert names == [
            "jobcloud.job.inputs-staged",
            "jobcloud.job.container-started",
            "jobcloud.job.container-exited",
            "jobcloud.job.outputs-uploaded",
            "jobcloud.job.completed",
        ], names
        roles = {r.role: r.id for r in events[-1].related if r.role in ("application", "version", "entrypoint")}
        assert roles == {
            "application": "jobcloud.application.chain",
            "version": "jobcloud.version.chain/v1",
            "entrypoint": "jobcloud.entrypoint.chain/v1/train",
        }
        assert events[2].payload["exit_code"] == 0
        assert events[-1].payload["artifact"] == f"jobs/{train_id}/artifact"

        # The automation fired: a predict run of the deployment, with the train job's artifact.
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        def predict_runs() -> list[Any]:
            return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[predict.id])))

        [run] = wait_until(predict_runs, FIRE_WAIT_S, 0.5, message="the automation to start predict")
        assert run.parameters["artifact_ids"] == [f"jobs/{train_id}/artifact"]
        assert run.parameters["data_ids"] == ["samples/chain/data"]
        fired = run.created.timestamp() - events[-1].occurred.timestamp()
        print(f"\npredict run created {fired:.1f} s after the train job's jobcloud.job.completed event")
        assert UUID(str(run.id))

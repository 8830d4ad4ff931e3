"""How jobs end: TimedOut, secrets from Prefect Secret blocks, and retries.

Real engine, real local job store, real Prefect server; each test writes its own catalog and
checks that no container of its job is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.engine_helpers import labelled_containers

pytestmark = pytest.mark.integration

BUSYBOX = "localhost/jobcloud/busybox:1"
SECRET_VALUE = "s3cr3t-" + uuid.uuid4().hex  # unique: any place it shows up is a leak

CATALOG = {
    "outcomes": {
        "v1": {
            "sleepy": {
                "app": {"cmd": ["echo line one; echo line two; echo last words; sleep 60"]},
                "handler": {"image_url": BUSYBOX, "files_up": {"log": "log"}},
                "aws_resources": {"timeout": 2},
            },
            "secretive": {
                "app": {
                    "cmd": [
                        'echo "token=$API_TOKEN lr=$LR";',
                        'printf %s "$API_TOKEN" | wc -c | tr -d " " > /files/output/length.txt;',
                        'printf %s "$API_TOKEN" | sha256sum | cut -d " " -f 1 > /files/output/sha256.txt',
                    ],
                    "env": ["LR"],
                    "secrets": ["API_TOKEN"],
                },
                "handler": {"image_url": BUSYBOX, "files_up": {"output": "output"}},
            },
            # Fails when an earlier attempt's outputs are still there (exit 4), and fails its
            # first attempt (exit 3) by a marker under /files that is no output folder, so it
            # survives between attempts while the output folder is emptied.
            "flaky": {
                "app": {
                    "cmd": [
                        'test -z "$(ls -A /files/output)" || { echo "outputs of an earlier attempt remain"; exit 4; };',
                        "if [ ! -e /files/first-attempt-done ]; then",
                        "touch /files/first-attempt-done; echo first > /files/output/first.txt;",
                        "echo first attempt fails; exit 3; fi;",
                        "echo second > /files/output/second.txt; echo second attempt works",
                    ]
                },
                "handler": {"image_url": BUSYBOX, "files_up": {"output": "output", "log": "log"}},
                "aws_resources": {"retries": 1, "retry_delay_s": 0},
            },
        }
    }
}


@pytest.fixture
def job_cli(prefect_api, images, cli, tmp_path: Path):
    """`jobcloud` with this module's catalog, against the session's Prefect server."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    cli.env["JOBCLOUD_CONFIG"] = str(catalog)
    os.environ["JOBCLOUD_CONFIG"] = str(catalog)
    return cli


@pytest.fixture
def prefect_client(prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
        yield client


def run_json(cli, *args: str) -> tuple[Any, dict[str, Any]]:
    proc = cli("run", *args, "--local", "--json")
    assert proc.stdout.strip(), proc.stderr
    return proc, json.loads(proc.stdout)


def assert_no_container_left(engine: str, job_id: str) -> None:
    left = labelled_containers(engine, f"io.jobcloud.job-id={job_id}")
    assert left == [], [c.id[:12] for c in left]


def flow_logs(client, job_id: str) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return [log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(job_id)])))]


def stored(cli, job_id: str, tmp_path: Path) -> Path:
    """The job's folder in the store, downloaded."""
    out = tmp_path / f"out-{job_id}"
    proc = cli("files", "get", f"jobs/{job_id}", str(out))
    assert proc.returncode == 0, proc.stderr
    return out / job_id


def test_timeout_ends_timed_out_with_the_last_lines(job_cli, engine, prefect_client, tmp_path: Path) -> None:
    proc, result = run_json(job_cli, "outcomes/v1/sleepy")
    assert proc.returncode == 1, proc.stderr
    job = result["id"]
    assert result["state"] == "TimedOut"
    message = result["message"]
    assert "timed out" in message
    assert "line two" in message and "last words" in message  # the tail, not only the first line
    manifest = result["manifest"]
    assert manifest["state"] == "TimedOut" and manifest["timed_out"] is True
    assert manifest["attempts"] == 1  # a timeout is never retried
    assert f"jobs/{job}/log/container.log" in {o["key"] for o in manifest["outputs"]}
    log = (stored(job_cli, job, tmp_path) / "log" / "container.log").read_text()
    assert "last words" in log and "timeout after 2 s" in log
    run = prefect_client.read_flow_run(job)
    assert run.state.name == "TimedOut" and run.state.is_failed()
    proc = job_cli("jobs", "ls", "--state", "error", "--json")
    assert proc.returncode == 0, proc.stderr
    assert any(j["id"] == job and j["state"] == "TimedOut" for j in json.loads(proc.stdout)["jobs"])
    assert_no_container_left(engine, job)


def _save_secret(prefect_api: str, name: str, value: str) -> None:
    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        Secret(value=value).save(name, overwrite=True)


def test_secret_reaches_the_container_and_nothing_else(job_cli, engine, prefect_api, prefect_client, tmp_path: Path) -> None:
    block = f"jc-test-token-{uuid.uuid4().hex[:8]}"
    _save_secret(prefect_api, block, SECRET_VALUE)
    proc, result = run_json(job_cli, "outcomes/v1/secretive", "--secret", f"API_TOKEN={block}", "--env", "LR=0.1")
    assert proc.returncode == 0, proc.stderr
    job = result["id"]
    assert SECRET_VALUE not in proc.stdout + proc.stderr
    # The app got the value: its length and hash are right.
    files = stored(job_cli, job, tmp_path)
    assert (files / "output" / "length.txt").read_text().strip() == str(len(SECRET_VALUE))
    assert (files / "output" / "sha256.txt").read_text().strip() == hashlib.sha256(SECRET_VALUE.encode()).hexdigest()
    # What it printed is masked in container.log and in the flow run's logs.
    log = (files / "log" / "container.log").read_text()
    assert "token=*** lr=0.1" in log and SECRET_VALUE not in log
    logs = flow_logs(prefect_client, job)
    assert any("token=*** lr=0.1" in m for m in logs)
    assert not any(SECRET_VALUE in m for m in logs)
    # The manifest names the variable only; parameters hold the block name only.
    manifest = json.loads((files / "manifest.json").read_text())
    assert manifest["secret_names"] == ["API_TOKEN"] and manifest["env_names"] == ["LR"]
    assert SECRET_VALUE not in json.dumps(manifest)
    run = prefect_client.read_flow_run(job)
    assert run.parameters["secrets"] == {"API_TOKEN": block}
    assert run.parameters["env"] == {"LR": "0.1"}  # plain env stays visible
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

    task_runs = prefect_client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    artifacts = prefect_client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    for obj in [run, *task_runs, *artifacts]:
        assert SECRET_VALUE not in obj.model_dump_json()
    shown = job_cli("jobs", "show", job, "--json")
    assert shown.returncode == 0 and SECRET_VALUE not in shown.stdout
    assert_no_container_left(engine, job)


def test_secret_block_by_its_default_name(job_cli, engine, prefect_api, prefect_client) -> None:
    # `secrets: [API_TOKEN]` reads block `api-token` when the job names none.
    _save_secret(prefect_api, "api-token", SECRET_VALUE)
    try:
        proc, result = run_json(job_cli, "outcomes/v1/secretive")
        assert proc.returncode == 0, proc.stderr
        assert result["manifest"]["secret_names"] == ["API_TOKEN"]
        assert prefect_client.read_flow_run(result["id"]).parameters.get("secrets", {}) == {}
        assert_no_container_left(engine, result["id"])
    finally:
        prefect_client.delete_block_document(prefect_client.read_block_document_by_name("api-token", "secret").id)


def test_missing_secret_block_or_unknown_name_starts_nothing(job_cli, prefect_client) -> None:
    before = len(prefect_client.read_flow_runs())
    proc = job_cli("run", "outcomes/v1/secretive", "--secret", "API_TOKEN=no-such-block", "--local")
    assert proc.returncode == 2, proc.stderr
    assert "'no-such-block'" in proc.stderr and "prefect block create secret" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = job_cli("run", "outcomes/v1/secretive", "--secret", "OTHER=some-block", "--local")
    assert proc.returncode == 2 and "OTHER not declared" in proc.stderr
    proc = job_cli("run", "outcomes/v1/secretive", "--secret", "API_TOKEN", "--local")
    assert proc.returncode == 2 and "NAME=BLOCK" in proc.stderr
    assert len(prefect_client.read_flow_runs()) == before  # no flow run was made


def test_app_retry_starts_clean_and_keeps_only_the_last_outputs(job_cli, engine, prefect_client, tmp_path: Path) -> None:
    proc, result = run_json(job_cli, "outcomes/v1/flaky")
    assert proc.returncode == 0, proc.stderr + result.get("message", "")
    job = result["id"]
    manifest = result["manifest"]
    assert result["state"] == "Completed" and manifest["state"] == "Completed"
    assert manifest["attempts"] == 2 and manifest["exit_code"] == 0
    keys = {o["key"] for o in manifest["outputs"]}
    assert f"jobs/{job}/output/second.txt" in keys
    assert f"jobs/{job}/output/first.txt" not in keys
    log = (stored(job_cli, job, tmp_path) / "log" / "container.log").read_text()
    assert log.startswith("[jobcloud] attempt 2 of ")
    assert "second attempt works" in log and "first attempt fails" not in log
    # Prefect's own task retry ran the container twice; the flow run's logs keep both attempts.
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = prefect_client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(job)])))
    (container_task,) = [t for t in runs if t.name.startswith("run-container")]
    assert container_task.run_count == 2
    logs = flow_logs(prefect_client, job)
    assert any("first attempt fails" in m for m in logs) and any("second attempt works" in m for m in logs)
    assert_no_container_left(engine, job)


def test_app_failure_is_not_retried_unless_the_catalog_asks(job_cli, engine, tmp_path: Path) -> None:
    flaky = CATALOG["outcomes"]["v1"]["flaky"]
    once = {"outcomes": {"v1": {"flaky": {**flaky, "aws_resources": {}}}}}
    catalog = tmp_path / "once.yaml"
    catalog.write_text(yaml.safe_dump(once))
    job_cli.env["JOBCLOUD_CONFIG"] = str(catalog)
    proc, result = run_json(job_cli, "outcomes/v1/flaky")
    assert proc.returncode == 1
    assert result["state"] == "Failed" and "exited with code 3" in result["message"]
    assert result["manifest"]["attempts"] == 1
    assert f"jobs/{result['id']}/output/first.txt" in {o["key"] for o in result["manifest"]["outputs"]}
    assert_no_container_left(engine, result["id"])


def test_unreachable_engine_is_retried_with_backoff(
    prefect_api, prefect_client, images, jc_env, engine, monkeypatch, tmp_path: Path
) -> None:
    """Infrastructure failures are retried (3 attempts) whatever the catalog says."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from jobcloud.blocks.store.factory import store_from_settings
    from jobcloud.flows.catalog import EntrypointRef, parse_catalog
    from jobcloud.flows.job import make_flow

    catalog = parse_catalog(yaml.safe_dump(CATALOG))
    ref = EntrypointRef.parse("outcomes/v1/sleepy")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("JOBCLOUD_INFRA_RETRY_DELAY_S", "0.2")
    store = store_from_settings()
    flow = make_flow(ref, catalog.get(ref), lambda: store)
    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        state = flow(return_state=True)
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()  # now, while the server runs, not at the interpreter's exit
    assert state.is_failed() and state.name == "Failed"
    manifest = state.result(raise_on_failure=False).manifest  # a JobEnded: the exception Prefect raises
    assert manifest["attempts"] == 3 and manifest["exit_code"] is None
    assert "engine" in state.message
    job = str(state.state_details.flow_run_id)
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = prefect_client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(job)])))
    (container_task,) = [t for t in runs if t.name.startswith("run-container")]
    assert container_task.run_count == 3  # Prefect's own retries, 0.2 s then 0.4 s apart
    assert any("Retry 2/2 will start 0.4 second(s) from now" in m for m in flow_logs(prefect_client, job))
    monkeypatch.setenv("DOCKER_HOST", engine)
    assert_no_container_left(engine, job)

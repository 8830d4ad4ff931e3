"""The `tes-task` flow for real: a real engine, a real local job store and the session's Prefect
server, the flow called in this process. Two executors sharing files, an executor error, an input
the store does not have; no container and no work folder left behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobcloud.blocks.store.job_store import JobStore
from jobcloud.flows.tes_plan import EXECUTOR_ERROR_STATE, TesPlan, TesRunLog, run_log_key
from tests.engine_helpers import labelled_containers

pytestmark = pytest.mark.integration

BUSYBOX = "localhost/jobcloud/busybox:1"


@pytest.fixture
def run_tes(engine, images, prefect_api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Run a plan as the flow does on a worker; returns (final state, store, job id)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    store_dir = tmp_path / "store"
    monkeypatch.setenv("JOBCLOUD_STORAGE", str(store_dir))
    monkeypatch.setenv("JOBCLOUD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_HOST", engine)
    store = JobStore(str(store_dir))
    store.write_bytes("users/alice/in.txt", b"hello tes\n")

    def run(**fields: Any) -> tuple[Any, JobStore, str]:
        from jobcloud.flows.tes_task import tes_task

        plan = TesPlan(store_url=f"file://{store.root}", **fields)
        with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
            state = tes_task(task={}, plan=plan.model_dump(mode="json"), return_state=True)
        job_id = str(state.state_details.flow_run_id)
        assert labelled_containers(engine, f"io.jobcloud.job-id={job_id}") == []
        assert not (tmp_path / "home" / "work" / job_id).exists()
        return state, store, job_id

    return run


def _log(store: JobStore, job_id: str) -> TesRunLog:
    return TesRunLog.model_validate_json(store.read_bytes(run_log_key(job_id)))


def test_two_executors_share_inputs_outputs_and_volumes(run_tes, prefect_api: str) -> None:
    url = "file:///ignored"
    state, store, job_id = run_tes(
        executors=[
            {"image": BUSYBOX, "command": ["md5sum", "/data/in.txt"], "stdout": "/out/md5.txt"},
            {
                "image": BUSYBOX,
                "command": ["sh", "-c", "cat /out/md5.txt /data/note.txt > /vol/both.txt; cp /vol/both.txt /out/dir/; echo $GREETING"],
                "env": {"GREETING": "hi there"},
                "workdir": "/vol",
            },
        ],
        inputs=[{"path": "/data/in.txt", "key": "users/alice/in.txt"}, {"path": "/data/note.txt", "content": "a note\n"}],
        outputs=[
            {"path": "/out/md5.txt", "key": "users/alice/md5.txt", "url": url},
            {"path": "/out/dir", "type": "DIRECTORY", "key": "users/alice/dir", "url": url},
        ],
        volumes=["/vol", "/out/dir"],
    )
    assert state.is_completed(), state.message
    assert store.read_bytes("users/alice/md5.txt").decode().endswith("/data/in.txt\n")
    assert store.read_bytes("users/alice/dir/both.txt").decode().endswith("a note\n")
    log = _log(store, job_id)
    assert log.outcome == "COMPLETE" and [e.exit_code for e in log.executors] == [0, 0]
    assert log.executors[1].stdout == "hi there"
    assert {o.path for o in log.outputs} == {"/out/md5.txt", "/out/dir/both.txt"}
    manifest = json.loads(store.read_bytes(f"jobs/{job_id}/manifest.json"))
    assert manifest["state"] == "Completed" and manifest["application"] == "tes"
    names = _task_run_names(prefect_api, job_id)
    assert [n for n in names if n.startswith("executor-")] == ["executor-0", "executor-1"], names


def _task_run_names(api: str, job_id: str) -> list[str]:
    """The names of the flow run's task runs, as the Prefect UI lists them."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tests.prefect_helpers import prefect_client

    with prefect_client(api) as c:
        runs = c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[job_id])))
    return sorted(r.name for r in runs)


def test_an_executor_error_stops_the_task_unless_ignored(run_tes) -> None:
    state, store, job_id = run_tes(
        executors=[
            {"image": BUSYBOX, "command": ["sh", "-c", "exit 5"], "ignore_error": True},
            {"image": BUSYBOX, "command": ["sh", "-c", "echo failing; exit 3"]},
            {"image": BUSYBOX, "command": ["echo", "never runs"]},
        ],
    )
    assert state.is_failed() and state.name == EXECUTOR_ERROR_STATE
    log = _log(store, job_id)
    assert log.outcome == "EXECUTOR_ERROR" and [e.exit_code for e in log.executors] == [5, 3]
    assert "exited with code 3" in log.system_logs[0]


def test_an_input_the_store_lacks_is_a_system_error(run_tes) -> None:
    state, store, job_id = run_tes(
        executors=[{"image": BUSYBOX, "command": ["true"]}],
        inputs=[{"path": "/data/x", "key": "users/alice/absent.txt"}, {"path": "/data/y", "foreign_url": "https://example.org/y"}],
    )
    assert state.is_failed() and state.name != EXECUTOR_ERROR_STATE
    log = _log(store, job_id)
    assert log.outcome == "SYSTEM_ERROR" and log.executors == []
    assert "users/alice/absent.txt" in log.system_logs[0]


def test_wildcard_outputs_land_under_the_url_folder(run_tes) -> None:
    state, store, job_id = run_tes(
        executors=[
            {
                "image": BUSYBOX,
                "command": [
                    "sh",
                    "-c",
                    "mkdir -p /data/run1 /data/run2 && echo 1 > /data/run1/a.txt && echo 22 > /data/run2/b.txt && echo x > /data/run2/c.log",
                ],
            }
        ],
        outputs=[
            {"path": "/data/run*/*.txt", "path_prefix": "/data/", "key": "users/alice/many", "url": "s3://b/users/alice/many/"},
            {"path": "/data/none-*", "path_prefix": "/data", "key": "users/alice/none", "url": "s3://b/users/alice/none"},
        ],
    )
    assert state.is_completed(), state.message
    assert store.read_bytes("users/alice/many/run1/a.txt") == b"1\n"
    assert store.read_bytes("users/alice/many/run2/b.txt") == b"22\n"
    assert not store.exists("users/alice/many/run2/c.log")
    log = _log(store, job_id)
    assert [(o.path, o.url, o.size_bytes) for o in log.outputs] == [
        ("/data/run1/a.txt", "s3://b/users/alice/many/run1/a.txt", "2"),
        ("/data/run2/b.txt", "s3://b/users/alice/many/run2/b.txt", "3"),
    ]
    assert log.system_logs == ["outputs[1]: nothing matched /data/none-* (FILE)"]


def test_a_task_asking_for_more_disk_than_is_free_never_starts(run_tes, tmp_path: Path) -> None:
    import shutil

    free_gb = shutil.disk_usage(tmp_path).free / 1e9
    state, store, job_id = run_tes(
        executors=[{"image": BUSYBOX, "command": ["true"]}],
        inputs=[{"path": "/data/in.txt", "key": "users/alice/in.txt"}],
        disk_gb=round(free_gb * 100 + 1000),
    )
    assert state.is_failed() and state.name != EXECUTOR_ERROR_STATE
    log = _log(store, job_id)
    assert log.outcome == "SYSTEM_ERROR" and log.executors == []
    assert "resources.disk_gb" in log.system_logs[0] and "GB free" in log.system_logs[0], log.system_logs
    # Within what is free the same task runs.
    state, store, job_id = run_tes(
        executors=[{"image": BUSYBOX, "command": ["true"]}],
        inputs=[{"path": "/data/in.txt", "key": "users/alice/in.txt"}],
        disk_gb=0.001,
    )
    assert state.is_completed(), state

"""The outputs table artifact (key, one row per file, full SHA-256), what upload-outputs logs,
and the one-line message of a failed job's final state. No engine, no server: Prefect's
artifact call and run logger are replaced by recorders."""

from __future__ import annotations

import hashlib
import logging
import pickle
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from jobcloud.blocks.store.job_store import JobStore
from jobcloud.flows import job
from jobcloud.flows.catalog import EntrypointRef, parse_catalog
from jobcloud.flows.manifest import JobEnded, JobManifest, OutputRecord, human_size
from jobcloud.flows.output_images import prefect_key

JOB = "0b3c9a52-0000-4000-8000-000000000001"
SHA_A = hashlib.sha256(b"a").hexdigest()
SHA_B = hashlib.sha256(b"b").hexdigest()

CATALOG = {
    "fitter": {
        "v1": {
            "train": {
                "app": {"cmd": ["true"]},
                "handler": {
                    "image_url": "localhost/jobcloud/busybox:1",
                    "files_up": {"output": "output", "log": "log", "artifact": "model"},
                },
            }
        }
    }
}


def manifest(outputs: list[OutputRecord], application: str = "torchfit", entrypoint: str = "train") -> JobManifest:
    now = datetime.now(UTC)
    return JobManifest(
        job_id=JOB,
        application=application,
        version="v1",
        entrypoint=entrypoint,
        image="img",
        command=["true"],
        env_names=[],
        hardware={},
        state="Completed",
        outputs=outputs,
        started_at=now,
        finished_at=now,
    )


def record(kind: str, name: str, size: int, sha: str) -> OutputRecord:
    return OutputRecord(kind=kind, key=f"jobs/{JOB}/{name}", size=size, sha256=sha)


@pytest.fixture
def artifacts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = []
    monkeypatch.setattr(job, "create_table_artifact", lambda **kw: made.append(kw))
    return made


def test_the_table_is_keyed_app_entrypoint_outputs(artifacts: list[dict[str, Any]]) -> None:
    job._outputs_artifact(manifest([record("output", "output/m.txt", 1, SHA_A)]))
    (made,) = artifacts
    assert made["key"] == "torchfit-train-outputs"
    assert JOB in made["description"] and f"jobs/{JOB}/" in made["description"]


@pytest.mark.parametrize(
    ("application", "entrypoint", "key"),
    [("My_App", "train.v2", "my-app-train-v2-outputs"), ("a--b", "--x__", "a-b-x-outputs"), ("DECODE", "fit", "decode-fit-outputs")],
)
def test_the_key_is_one_prefect_accepts(application: str, entrypoint: str, key: str, artifacts: list[dict[str, Any]]) -> None:
    job._outputs_artifact(manifest([], application=application, entrypoint=entrypoint))
    assert artifacts[0]["key"] == key
    assert prefect_key(application, entrypoint, "outputs") == key
    # What Prefect's ArtifactCreate accepts: lowercase letters, numbers and dashes.
    from prefect.client.schemas.actions import ArtifactCreate

    ArtifactCreate(key=key)


def test_each_file_once_with_its_full_sha256(artifacts: list[dict[str, Any]]) -> None:
    outputs = [
        record("output", "output/loss_curve.png", 65890, SHA_A),
        record("log", "log/train.log", 1371, SHA_B),
        record("log", "log/container.log", 10, SHA_A),
        record("log", "log/container.log", 1371, SHA_B),  # the same key again: the store holds the last
    ]
    job._outputs_artifact(manifest(outputs))
    rows = artifacts[0]["table"]
    files = [r["file"] for r in rows]
    assert sorted(files) == sorted(set(files)) == ["log/container.log", "log/train.log", "output/loss_curve.png"]
    by_file = {r["file"]: r for r in rows}
    assert by_file["log/container.log"]["bytes"] == 1371 and by_file["log/container.log"]["sha256"] == SHA_B
    assert all(len(r["sha256"]) == 64 for r in rows)  # never cut
    assert by_file["output/loss_curve.png"] == {
        "kind": "output",
        "file": "output/loss_curve.png",
        "size": "64.3 KiB",
        "bytes": 65890,
        "sha256": SHA_A,
    }


def test_a_job_without_outputs_still_gets_its_table(artifacts: list[dict[str, Any]]) -> None:
    job._outputs_artifact(manifest([]))
    assert artifacts[0]["key"] == "torchfit-train-outputs"
    assert artifacts[0]["table"][0]["file"] == "(no outputs)"


def test_human_sizes() -> None:
    assert [human_size(n) for n in (0, 27, 1023, 1024, 65890, 5 * 1024**3)] == [
        "0 B",
        "27 B",
        "1023 B",
        "1.0 KiB",
        "64.3 KiB",
        "5.0 GiB",
    ]


def test_upload_outputs_lists_each_key_once_and_says_what_went_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    entry = parse_catalog(yaml.safe_dump(CATALOG)).get(EntrypointRef.parse("fitter/v1/train"))
    files = tmp_path / "files"
    for folder in ("output", "log", "model"):
        (files / folder).mkdir(parents=True)
    (files / "output" / "a.txt").write_text("a")
    (files / "output" / "b.txt").write_text("bb")
    (files / "output" / "leak").symlink_to("/etc/passwd")
    (files / "log" / "container.log").write_text("the app's own\n")  # the same key as ours
    container_log = tmp_path / "container.log"
    container_log.write_text("line one\nline two\n")
    store = JobStore(str(tmp_path / "store"))
    logger = logging.getLogger("test-upload-outputs")
    monkeypatch.setattr(job, "get_run_logger", lambda: logger)
    with caplog.at_level(logging.INFO, logger=logger.name):
        records, skipped = job.upload_outputs.fn(store, entry, JOB, files, container_log)
    keys = [r.key for r in records]
    assert len(keys) == len(set(keys))
    prefix = f"jobs/{JOB}"
    assert sorted(keys) == [f"{prefix}/log/container.log", f"{prefix}/output/a.txt", f"{prefix}/output/b.txt"]
    ours = next(r for r in records if r.key.endswith("container.log"))
    assert ours.sha256 == hashlib.sha256(b"line one\nline two\n").hexdigest()  # ours wins, as in the store
    assert store.read_bytes(f"{prefix}/log/container.log") == b"line one\nline two\n"
    assert skipped == ["output/leak"]
    lines = [r.getMessage() for r in caplog.records]
    assert f"uploaded /files/output/: 2 files, 3 B -> {prefix}/output/" in lines
    assert f"uploaded /files/log/: 1 file, 14 B -> {prefix}/log/" in lines
    assert f"/files/model/ is empty: nothing uploaded to {prefix}/artifact/" in lines
    assert f"uploaded the container's output: 18 B -> {prefix}/log/container.log" in lines
    assert any("not uploaded from /files/output/" in m and "leak" in m for m in lines)


def test_a_failed_jobs_state_message_is_one_line_with_the_last_lines() -> None:
    tail = ["line one", "line two", "", "x" * 500, "last words"]
    message = job._with_last_lines("container exited with code 3", tail)
    assert "\n" not in message
    assert message.startswith("container exited with code 3; last lines: ")
    assert "line two" in message and message.endswith("last words")
    assert "x" * job.LINE_MAX + "..." in message and "x" * (job.LINE_MAX + 1) not in message
    many = job._with_last_lines("container timed out and was stopped", [f"l{i}" for i in range(20)])
    assert "l14" not in many and "l15 | l16 | l17 | l18 | l19" in many
    assert job._with_last_lines("container exited with code 1", []) == "container exited with code 1"
    assert job._one_line("a\n\n  b  \nuploading outputs failed: x") == "a | b | uploading outputs failed: x"


@pytest.mark.parametrize("how", ["Failed", "TimedOut", "Cancelled"])
def test_a_job_that_did_not_complete_ends_in_a_state_prefect_can_raise(how: str, caplog: pytest.LogCaptureFixture) -> None:
    """What a worker logs when a job ends Failed or Cancelled: Prefect asks for the run's result
    and logs what that raises. It is the job's one-line message with its manifest, not
    Prefect's TypeError "... cannot be resolved into an exception"."""
    ended = manifest([]).model_copy(update={"state": "Cancelled" if how == "Cancelled" else how, "exit_code": 3})
    job_log = logging.getLogger("test-job-end")
    ctx = SimpleNamespace(
        failure="container exited with code 3\nlast lines:\n  boom",
        summary="container exited with code 3; last lines: boom",
        cancelled=how == "Cancelled",
        logger=job_log,
    )
    state = job.end_state(ctx, ended)
    assert state.name == how and state.message == "container exited with code 3; last lines: boom"
    worker_log = logging.getLogger("test-worker")  # as prefect.flow_engine.run_flow's error_logger
    with caplog.at_level(logging.INFO):
        try:
            state.result()  # raise_on_failure, as the worker's engine asks for it
        except Exception:
            worker_log.error("Engine execution exited with unexpected exception", exc_info=True)
    assert "cannot be resolved into an exception" not in caplog.text
    assert "Unexpected result for failed state" not in caplog.text
    (raised,) = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert isinstance(raised, JobEnded) and str(raised) == state.message
    assert raised.manifest == ended.model_dump(mode="json")  # in-process callers still get it
    assert pickle.loads(pickle.dumps(raised)).manifest == raised.manifest
    # The failure once in the job's log, as lines.
    assert [r.getMessage() for r in caplog.records if r.name == job_log.name] == [ctx.failure]


def test_a_completed_job_returns_its_manifest() -> None:
    done = manifest([])
    ctx = SimpleNamespace(failure=None, summary=None, cancelled=False, logger=logging.getLogger("test-job-end"))
    assert job.end_state(ctx, done) is done

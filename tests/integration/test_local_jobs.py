"""Jobs end to end with a real engine, a real local job store and a real Prefect server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

BUSYBOX = "localhost/jobcloud/busybox:1"

# A DECODE-style catalog (DECODE's own layout: cmd finds its inputs under /files).
DECODE_LIKE = {
    "decodelike": {
        "v1": {
            "train": {
                "app": {
                    "cmd": [
                        "CALIB=$(find /files/data -name '*.mat' | head -n 1);",
                        "PARAM=$(find /files/config -name '*.yaml' | head -n 1);",
                        'test -f "$CALIB" && test -f "$PARAM" || { echo "inputs missing" >&2; exit 9; };',
                        'echo "calib=$CALIB param=$PARAM lr=$LEARNING_RATE";',
                        'cat "$PARAM" > /files/model/model.bin; echo trained >> /files/model/model.bin;',
                        'echo "epoch 1 loss 0.5" > /files/log/train.log;',
                        'echo "score 0.9" > /files/output/metrics.txt;',
                        "ln -s /etc/passwd /files/output/leak",
                    ],
                    "env": ["LEARNING_RATE"],
                },
                "handler": {
                    "image_url": BUSYBOX,
                    "files_down": {"config_id": "config", "data_ids": "data", "artifact_ids": "artifact"},
                    "files_up": {"output": "output", "log": "log", "artifact": "model"},
                },
                "aws_resources": {"hardware": {"MEMORY": 128, "VCPU": 1, "GPU": 0}, "timeout": 120},
            },
            "predict": {
                "app": {
                    "cmd": [
                        "M=$(find /files/artifact -name model.bin | head -n 1);",
                        'test -f "$M" || exit 8;',
                        'cp "$M" /files/output/used-model.bin; echo predicted',
                    ],
                    "env": [],
                },
                "handler": {
                    "image_url": BUSYBOX,
                    "files_down": {"data_ids": "data", "artifact_ids": "artifact"},
                    "files_up": {"output": "output"},
                },
            },
            "fail": {
                "app": {
                    "cmd": ["echo starting; echo 'something broke' >&2; mkdir -p /files/log; echo partial > /files/log/app.log; exit 7"]
                },
                "handler": {"image_url": BUSYBOX, "files_up": {"log": "log"}},
            },
            "sleep": {
                "app": {"cmd": ["echo going to sleep; sleep 60"]},
                "handler": {"image_url": BUSYBOX, "files_up": {"log": "log"}},
                "aws_resources": {"timeout": 2},
            },
        }
    }
}


@pytest.fixture
def job_cli(prefect_api, images, cli, tmp_path: Path):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(DECODE_LIKE))
    cli.env["JOBCLOUD_CONFIG"] = str(catalog)
    os.environ["JOBCLOUD_CONFIG"] = str(catalog)
    inputs = tmp_path / "inputs"
    (inputs / "exp1").mkdir(parents=True)
    (inputs / "exp1" / "calib.mat").write_bytes(b"\x00MATLAB 5.0" * 100)
    (inputs / "exp1" / "notes.txt").write_text("not a mat file\n")
    (inputs / "param.yaml").write_text("lr: 0.01\n")
    assert cli("files", "put", str(inputs / "exp1"), "data").returncode == 0
    assert cli("files", "put", str(inputs / "param.yaml"), "config").returncode == 0
    return cli


def run_json(cli, *args: str):
    proc = cli("run", *args, "--local", "--json")
    assert proc.stdout.strip(), proc.stderr
    return proc, json.loads(proc.stdout)


def test_decode_style_train_end_to_end(job_cli, tmp_path: Path) -> None:
    proc, result = run_json(
        job_cli, "decodelike/v1/train", "--config", "config/param.yaml", "--data", "data/exp1", "--env", "LEARNING_RATE=0.01"
    )
    assert proc.returncode == 0, proc.stderr
    assert result["state"] == "Completed"
    job = result["id"]
    assert result["outputs"] == f"jobs/{job}"
    manifest = result["manifest"]
    keys = {o["key"]: o for o in manifest["outputs"]}
    assert f"jobs/{job}/artifact/model.bin" in keys
    assert f"jobs/{job}/log/train.log" in keys
    assert f"jobs/{job}/output/metrics.txt" in keys
    assert f"jobs/{job}/log/container.log" in keys
    # The link the app made is neither followed nor uploaded.
    assert f"jobs/{job}/output/leak" not in keys
    assert manifest["skipped"] == ["output/leak"]
    assert manifest["exit_code"] == 0
    assert {i["key"] for i in manifest["inputs"]} == {"config/param.yaml", "data/exp1"}
    staged = {i["key"]: i["staged_at"] for i in manifest["inputs"]}
    assert staged == {"config/param.yaml": "/files/config/param.yaml", "data/exp1": "/files/data/exp1"}
    # The container's output is kept line by line in container.log.
    out = tmp_path / "out"
    assert job_cli("files", "get", f"jobs/{job}", str(out)).returncode == 0
    log = (out / job / "log" / "container.log").read_text()
    assert "calib=/files/data/exp1/calib.mat param=/files/config/param.yaml lr=0.01" in log
    assert (out / job / "artifact" / "model.bin").read_text() == "lr: 0.01\ntrained\n"
    # The manifest is in the store too, and it is the last thing written.
    stored = json.loads((out / job / "manifest.json").read_text())
    assert stored["job_id"] == job and stored["state"] == "Completed"


def test_flow_run_is_tagged_and_logs_the_container_output(job_cli, prefect_api) -> None:
    proc, result = run_json(job_cli, "decodelike/v1/train", "--config", "config/param.yaml", "--data", "data/exp1")
    assert proc.returncode == 0, proc.stderr
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
        run = client.read_flow_run(result["id"])
        assert {"app:decodelike", "version:v1", "entrypoint:train"} <= set(run.tags)
        assert run.state.is_completed()
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        assert any("calib=/files/data/exp1/calib.mat" in log.message for log in logs)


def test_train_then_predict_with_the_artifact(job_cli) -> None:
    proc, train = run_json(job_cli, "decodelike/v1/train", "--config", "config/param.yaml", "--data", "data/exp1")
    assert proc.returncode == 0, proc.stderr
    proc, pred = run_json(job_cli, "decodelike/v1/predict", "--artifact", f"jobs/{train['id']}/artifact", "--data", "data/exp1")
    assert proc.returncode == 0, proc.stderr
    staged = pred["manifest"]["inputs"][1]
    assert staged["staged_at"] == "/files/artifact/artifact"
    assert any(o["key"].endswith("output/used-model.bin") for o in pred["manifest"]["outputs"])


def test_failing_container_keeps_its_log_and_fails(job_cli, tmp_path: Path) -> None:
    proc, result = run_json(job_cli, "decodelike/v1/fail")
    assert proc.returncode == 1
    assert result["state"] == "Failed"
    assert "exited with code 7" in result["message"]
    assert "something broke" in result["message"]
    m = result["manifest"]
    assert m["exit_code"] == 7 and m["state"] == "Failed"
    keys = {o["key"] for o in m["outputs"]}
    assert f"jobs/{result['id']}/log/app.log" in keys
    assert f"jobs/{result['id']}/log/container.log" in keys
    text = proc.stderr
    assert "Traceback" not in text


def test_timeout_stops_the_container(job_cli) -> None:
    proc, result = run_json(job_cli, "decodelike/v1/sleep")
    assert proc.returncode == 1
    assert result["state"] == "TimedOut"
    assert result["manifest"]["timed_out"] is True
    assert "timed out" in result["message"]
    assert result["manifest"]["timings"]["container_s"] < 30


def test_env_outside_the_allow_list_starts_nothing(job_cli) -> None:
    proc = job_cli("run", "decodelike/v1/train", "--env", "LD_PRELOAD=/evil.so", "--local")
    assert proc.returncode == 2
    assert "LD_PRELOAD" in proc.stderr and "allowed: LEARNING_RATE" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert job_cli("files", "ls", "jobs").returncode == 2  # no job folder was made


@pytest.mark.parametrize("key", ["../secrets", "data/../../etc", "/etc/passwd", "data/%2e%2e/x"])
def test_unsafe_key_is_refused(job_cli, key: str) -> None:
    proc = job_cli("run", "decodelike/v1/train", "--data", key, "--local")
    assert proc.returncode == 2, proc.stderr
    assert "invalid key" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_key_is_refused_before_anything_starts(job_cli) -> None:
    proc = job_cli("run", "decodelike/v1/train", "--data", "data/nope", "--local")
    assert proc.returncode == 2
    assert "no such key 'data/nope'" in proc.stderr


def test_unknown_entrypoint_and_bad_usage(job_cli) -> None:
    proc = job_cli("run", "decodelike/v1/nope", "--local")
    assert proc.returncode == 2 and "known:" in proc.stderr
    proc = job_cli("run", "decodelike/v1/train", "--cpu", "-1", "--local")
    assert proc.returncode == 2
    proc = job_cli("run", "decodelike/v1/train", "--env", "NOEQUALS", "--local")
    assert proc.returncode == 2 and "NAME=VALUE" in proc.stderr


def test_missing_image_is_a_clear_error(job_cli, tmp_path: Path) -> None:
    cat = DECODE_LIKE["decodelike"]["v1"]["fail"]
    bad = {"ghost": {"v1": {"run": {**cat, "handler": {"image_url": "localhost/jobcloud/does-not-exist:0"}}}}}
    path = tmp_path / "ghost.yaml"
    path.write_text(yaml.safe_dump(bad))
    job_cli.env["JOBCLOUD_CONFIG"] = str(path)
    proc = job_cli("run", "ghost/v1/run", "--local")
    assert proc.returncode == 2, proc.stderr
    assert "does-not-exist" in proc.stderr and "Traceback" not in proc.stderr


def test_data_through_a_linked_folder_in_the_store_is_refused(job_cli, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "calib.mat").write_bytes(b"\x00MATLAB 5.0 not for jobs")
    store = Path(job_cli.env["JOBCLOUD_STORAGE"])
    (store / "data" / "link").symlink_to(outside, target_is_directory=True)
    proc = job_cli("run", "decodelike/v1/train", "--config", "config/param.yaml", "--data", "data/link/calib.mat", "--local")
    assert proc.returncode == 2, proc.stderr
    assert "'data/link' is a symbolic link inside the job store; links are never followed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert job_cli("files", "ls", "jobs").returncode == 2  # no job folder was made


def _run_records(prefect_api: str, job_id: str) -> tuple:
    """The flow run, its log records and its artifacts, read back from the real server."""
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_api}), get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(job_id))
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    return run, logs, found


def test_outputs_table_is_keyed_lists_each_file_once_with_full_sha256(job_cli, prefect_api) -> None:
    proc, result = run_json(job_cli, "decodelike/v1/train", "--config", "config/param.yaml", "--data", "data/exp1")
    assert proc.returncode == 0, proc.stderr
    job = result["id"]
    _, logs, found = _run_records(prefect_api, job)
    (table,) = [a for a in found if a.type == "table"]
    assert table.key == "decodelike-train-outputs"  # so the Artifacts page lists it
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    files = [r["file"] for r in rows]
    assert len(files) == len(set(files)), files
    expected = {o["key"].removeprefix(f"jobs/{job}/"): o for o in result["manifest"]["outputs"]}
    assert sorted(files) == sorted(expected) and "log/container.log" in files
    for r in rows:
        assert r["sha256"] == expected[r["file"]]["sha256"] and len(r["sha256"]) == 64
        assert r["bytes"] == expected[r["file"]]["size"]
    # upload-outputs says what went where, and names what it left out.
    messages = [log.message for log in logs]
    assert f"uploaded /files/output/: 1 file, 10 B -> jobs/{job}/output/" in messages
    assert any(m.startswith("uploaded the container's output: ") and m.endswith(f"-> jobs/{job}/log/container.log") for m in messages)
    assert any("not uploaded from /files/output/" in m and "leak" in m for m in messages)


def test_a_failed_runs_message_is_logged_once_with_its_lines(job_cli, prefect_api) -> None:
    proc, result = run_json(job_cli, "decodelike/v1/fail")
    assert proc.returncode == 1 and result["state"] == "Failed"
    full = result["manifest"]["message"]
    assert full == "container exited with code 7; last lines of output:\nstarting\nsomething broke"
    run, logs, _ = _run_records(prefect_api, result["id"])
    messages = [log.message for log in logs]
    # One ERROR line of the flow: the exit code, then the last lines as real lines.
    errors = [log for log in logs if log.level >= 40 and log.task_run_id is None]
    assert [e.message for e in errors] == [full], messages
    assert sum(full in m for m in messages) == 1
    # The final state's message: one readable line; Prefect's "Finished in state" shows it once.
    message = run.state.message
    assert "\n" not in message and message == result["message"]
    assert message == "container exited with code 7; last lines: starting | something broke"
    assert sum(message in m for m in messages) == 1
    # Beyond the container's own line, its last line appears in the ERROR line and the state's message only.
    assert sum("something broke" in m for m in messages if m != "something broke") == 2, messages
    for m in messages:
        assert "\\n" not in m and "NoneType: None" not in m and "Traceback" not in m, m

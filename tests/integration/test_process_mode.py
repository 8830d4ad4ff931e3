"""In-container mode's flow, on this host: the job flow with `JOBCLOUD_RUNNER=process` runs the
command as a subprocess in its files folder, with the same staging, upload, failure and
manifest rules as host mode (a real Prefect server and a real local job store; no engine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

CATALOG = {
    "proc": {
        "v1": {
            "train": {
                "app": {
                    # Relative paths: the command runs in JOBCLOUD_FILES_DIR, as in an image it is /files.
                    "cmd": [
                        'echo "cwd=$(pwd) lr=$LR storage=${JOBCLOUD_STORAGE:-unset} api=${PREFECT_API_URL:-unset}";',
                        "cat config/*.yaml > model/model.txt; echo 'score 1' > output/score.txt",
                    ],
                    "env": ["LR"],
                },
                "handler": {
                    "image_url": "localhost/not/needed:1",
                    "files_down": {"config_id": "config"},
                    "files_up": {"output": "output", "artifact": "model", "log": "log"},
                },
                "aws_resources": {"timeout": 60},
            },
            "fail": {
                "app": {"cmd": ["echo partial > log/app.log; echo broken >&2; exit 4"]},
                "handler": {"image_url": "localhost/not/needed:1", "files_up": {"log": "log"}},
            },
            "slow": {
                "app": {"cmd": ["echo sleeping; sleep 120"]},
                "handler": {"image_url": "localhost/not/needed:1", "files_up": {"log": "log"}},
                "aws_resources": {"timeout": 2},
            },
        }
    }
}


@pytest.fixture
def proc_cli(prefect_api, cli, tmp_path: Path):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    files = tmp_path / "files"
    files.mkdir()
    cli.env.update(JOBCLOUD_CONFIG=str(catalog), JOBCLOUD_RUNNER="process", JOBCLOUD_FILES_DIR=str(files))
    (tmp_path / "a.yaml").write_text("lr: 0.5\n")
    assert cli("files", "put", str(tmp_path / "a.yaml"), "config").returncode == 0
    cli.files = files
    return cli


def run_json(cli, *args: str):
    proc = cli("run", *args, "--local", "--json")
    assert proc.stdout.strip(), proc.stderr
    return proc, json.loads(proc.stdout)


def test_process_mode_job_end_to_end(proc_cli, tmp_path: Path) -> None:
    proc, result = run_json(proc_cli, "proc/v1/train", "--config", "config/a.yaml", "--env", "LR=0.1")
    assert proc.returncode == 0, proc.stderr
    m = result["manifest"]
    assert m["state"] == "Completed" and m["runner"] == "process" and m["definition"] == "catalog"
    keys = {o["key"] for o in m["outputs"]}
    job = result["id"]
    assert {f"jobs/{job}/artifact/model.txt", f"jobs/{job}/output/score.txt", f"jobs/{job}/log/container.log"} <= keys
    out = tmp_path / "out"
    assert proc_cli("files", "get", f"jobs/{job}", str(out)).returncode == 0
    log = (out / job / "log" / "container.log").read_text()
    # The flow's settings never reach the command; the allow-listed variable does.
    assert f"cwd={proc_cli.files} lr=0.1 storage=unset api=unset" in log
    assert (out / job / "artifact" / "model.txt").read_text() == "lr: 0.5\n"


def test_process_mode_failure_keeps_the_log(proc_cli) -> None:
    proc, result = run_json(proc_cli, "proc/v1/fail")
    assert proc.returncode == 1, proc.stderr
    m = result["manifest"]
    assert m["state"] == "Failed" and m["exit_code"] == 4
    assert "broken" in m["message"]
    keys = {o["key"].rsplit("/", 1)[-1] for o in m["outputs"]}
    assert {"app.log", "container.log"} <= keys


def test_process_mode_timeout(proc_cli) -> None:
    proc, result = run_json(proc_cli, "proc/v1/slow")
    m = result["manifest"]
    assert m["state"] == "TimedOut" and m["timed_out"]
    assert m["timings"]["total_s"] < 30

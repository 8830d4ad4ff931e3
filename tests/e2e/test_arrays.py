"""Job arrays end to end: a real Prefect server, `jobcloud deploy`, real workers, Podman and a
local job store. An array of 50 with a failing and a timed-out element, then `--retry-failed`;
`--shards 3` over three workers, each element run once; the array's record, table and
manifests; a bad array file refused with nothing submitted."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobcloud.deployments.server.processes import PrefectServer, Proc, start_worker
from tests.conftest import ROOT, Cli
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

BUSYBOX = "localhost/jobcloud/busybox:1"
CATALOG = f"""
arr:
  v1:
    each:
      description: Copies its data file to its output; "fail" fails, "slow" runs past the timeout.
      required_inputs: [data_ids]
      app:
        cmd: ["v=$(cat /files/data/*); echo element $v; case $v in fail*) echo failing >&2; exit 3;; slow*) sleep 60;; esac; cp /files/data/* /files/output/"]
        env: [SEED]
      handler:
        image_url: "{BUSYBOX}"
        files_down: {{data_ids: data}}
        files_up: {{output: output, log: log}}
      aws_resources: {{timeout: 3}}
"""
ELEMENTS = 50


class Stack:
    def __init__(self, server: PrefectServer, env: dict[str, str], tmp: Path) -> None:
        self.server, self.env, self.tmp = server, env, tmp
        self.cli = Cli(env=env, cwd=tmp)
        self.workers: list[Proc] = []

    def store(self) -> Path:
        return Path(self.env["JOBCLOUD_STORAGE"])

    def worker(self, name: str) -> Proc:
        proc = start_worker(self.server, "cpu", self.env, self.tmp / f"{name}.log", name=name)
        self.workers.append(proc)
        wait_until(lambda: "started" in proc.tail(200), 90, message=f"worker {name} to start")
        return proc

    def client(self) -> Any:
        from tests.prefect_helpers import prefect_client

        return prefect_client(self.server.api_url)

    def elements(self, run_id: str) -> list[Any]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        with self.client() as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        return [r for r in runs if r.name.startswith("element-")]


def _ok(proc: subprocess.CompletedProcess[str], rc: int = 0) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == rc, f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def stack(engine: str, images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("arrays")
    catalog = tmp / "application_config.yaml"
    catalog.write_text(CATALOG)
    server = PrefectServer(home=tmp / "prefect-home")
    server.start()
    env = server.env(
        {
            **{k: v for k, v in os.environ.items() if not k.startswith("JOBCLOUD_")},
            "JOBCLOUD_HOME": str(tmp / "jc-home"),
            "JOBCLOUD_STORAGE": str(tmp / "store"),
            "JOBCLOUD_CONFIG": str(catalog),
            "JOBCLOUD_STOP_GRACE_S": "1",
            "DOCKER_HOST": engine,
            "PYTHONPATH": str(ROOT),
        }
    )
    st = Stack(server, env, tmp)
    try:
        _ok(st.cli("deploy"))
        st.worker("arrays-1")
        yield st
    finally:
        for proc in st.workers:
            proc.stop(timeout=10)
        server.stop()


def _put_elements(stack: Stack, folder: str, values: dict[int, str]) -> None:
    for i in range(ELEMENTS):
        path = stack.store() / folder / f"e{i:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(values.get(i, f"ok {i}") + "\n")


def test_array_of_50_with_a_failure_and_a_timeout_then_retry_failed(stack: Stack, tmp_path: Path) -> None:
    _put_elements(stack, "sweep", {7: "fail", 21: "slow"})
    proc = _ok(stack.cli("run", "arr/v1/each", "--array-over", "sweep", "--parallel", "4", "--json", timeout=600), rc=1)
    doc = json.loads(proc.stdout)
    array_id = doc["array_id"]
    assert doc["counts"] == {"Completed": 48, "Failed": 1, "TimedOut": 1}, doc
    assert doc["runs"] == [array_id]  # one shard: the array is its flow run
    prefix = stack.store() / "jobs" / array_id
    for i in range(ELEMENTS):
        m = json.loads((prefix / str(i) / "manifest.json").read_text())
        assert m["job_id"] == f"{array_id}/{i}"
        if i not in (7, 21):
            assert m["state"] == "Completed" and (prefix / str(i) / "output" / f"e{i:03d}.txt").read_text() == f"ok {i}\n"
    assert json.loads((prefix / "7" / "manifest.json").read_text())["exit_code"] == 3
    assert json.loads((prefix / "21" / "manifest.json").read_text())["state"] == "TimedOut"
    assert "failing" in (prefix / "7" / "log" / "container.log").read_text()
    record = json.loads((prefix / "array.json").read_text())
    assert record["counts"] == {"Completed": 48, "Failed": 1, "TimedOut": 1} and len(record["elements"]) == ELEMENTS
    assert {e["index"]: e["manifest"] for e in record["elements"]}[7] == f"jobs/{array_id}/7/manifest.json"
    # The array is one flow run, Failed with the counts; each element one task run.
    with stack.client() as client:
        run = client.read_flow_run(array_id)
        artifacts = client.read_artifacts()
    assert run.state.name == "Failed" and "48 of 50 completed, 1 failed, 1 timed out" in run.state.message
    elements = stack.elements(array_id)
    assert len(elements) == ELEMENTS
    assert {r.name: r.state.type.value for r in elements}["element-7"] == "FAILED"
    table = next(a for a in artifacts if a.key == "arr-each-array" and a.flow_run_id == run.id)
    assert json.loads(table.data)[0]["index"] in (7, 21)  # failures first
    assert any(a.type == "progress" and a.flow_run_id == run.id and a.data == 100.0 for a in artifacts)
    # `jobs show` lists the elements; `jobs outputs` fetches all.
    shown = json.loads(_ok(stack.cli("jobs", "show", array_id, "--json")).stdout)
    assert shown["array"]["counts"] == {"Completed": 48, "Failed": 1, "TimedOut": 1}
    assert len(shown["array"]["elements"]) == ELEMENTS
    _ok(stack.cli("jobs", "outputs", array_id, str(tmp_path / "all")))
    assert (tmp_path / "all" / "3" / "output" / "e003.txt").is_file() and (tmp_path / "all" / "array.json").is_file()

    # Fixed inputs; only the two that did not complete run again, into the same array.
    (stack.store() / "sweep" / "e007.txt").write_text("ok 7\n")
    (stack.store() / "sweep" / "e021.txt").write_text("ok 21\n")
    again = json.loads(_ok(stack.cli("run", "arr/v1/each", "--retry-failed", array_id, "--json", timeout=300)).stdout)
    assert again["array_id"] == array_id and again["counts"] == {"Completed": 50}
    assert len(stack.elements(again["runs"][0])) == 2
    assert (prefix / "21" / "output" / "e021.txt").read_text() == "ok 21\n"
    assert json.loads((prefix / "array.json").read_text())["state"] == "Completed"


def test_shards_over_three_workers_run_each_element_once(stack: Stack) -> None:
    stack.worker("arrays-2")
    stack.worker("arrays-3")
    _put_elements(stack, "sharded", {})
    rows = stack.tmp / "rows.jsonl"
    rows.write_text("".join(json.dumps({"data_ids": [f"sharded/e{i:03d}.txt"], "env": {"SEED": str(i)}}) + "\n" for i in range(30)))
    doc = json.loads(
        _ok(stack.cli("run", "arr/v1/each", "--array", str(rows), "--shards", "3", "--parallel", "2", "--json", timeout=600)).stdout
    )
    assert len(doc["runs"]) == 3 and doc["counts"] == {"Completed": 30}
    names: list[str] = []
    for run_id in doc["runs"]:
        names += [r.name for r in stack.elements(run_id)]
    assert sorted(names) == sorted(f"element-{i}" for i in range(30))  # each once, over the shards
    prefix = stack.store() / "jobs" / doc["array_id"]
    assert sorted(int(p.name) for p in prefix.iterdir() if p.name.isdigit()) == list(range(30))


def test_a_bad_row_submits_nothing(stack: Stack) -> None:
    rows = stack.tmp / "bad.csv"
    rows.write_text("data_ids,colour\nsweep/e000.txt,red\n")
    with stack.client() as client:
        before = len(client.read_flow_runs())
    proc = _ok(stack.cli("run", "arr/v1/each", "--array", str(rows)), rc=2)
    assert "array row 1" in proc.stderr and "colour" in proc.stderr and "Traceback" not in proc.stderr
    rows.write_text("data_ids\nsweep/../x\n")
    proc = _ok(stack.cli("run", "arr/v1/each", "--array", str(rows)), rc=2)
    assert "array row 1" in proc.stderr and "data_ids" in proc.stderr
    rows.write_text("data_ids\n")
    assert "no elements" in _ok(stack.cli("run", "arr/v1/each", "--array", str(rows)), rc=2).stderr
    with stack.client() as client:
        assert len(client.read_flow_runs()) == before


PYTHON_API = """
import json, jobcloud
sweep = jobcloud.submit_array("arr/v1/each", [{"data_ids": ["sweep/e001.txt"]}, {"data_ids": ["sweep/e002.txt"], "env": {"SEED": "2"}}], parallel=2)
state = sweep.wait(timeout=300)
print(json.dumps({"id": sweep.id, "state": state, "counts": sweep.record()["counts"]}))
"""


def test_python_api_and_prefect_deployment_run(stack: Stack) -> None:
    import sys

    _put_elements(stack, "sweep", {})
    proc = _ok(
        subprocess.run([sys.executable, "-c", PYTHON_API], env=stack.env, cwd=stack.tmp, capture_output=True, text=True, timeout=400)
    )
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["state"] == "Completed" and doc["counts"] == {"Completed": 2}
    assert (stack.store() / "jobs" / doc["id"] / "1" / "output" / "e002.txt").is_file()
    # The same from Prefect's own CLI: the `array` parameter, as the run form shows it.
    params = {"data_ids": ["sweep/e000.txt"], "array": {"elements": [{}, {"data_ids": ["sweep/e004.txt"]}], "parallel": 2}}
    run = subprocess.run(
        [sys.executable, "-m", "prefect", "deployment", "run", "arr-each/arr-v1-each", "--params", json.dumps(params), "--watch"],
        env=stack.env, cwd=stack.tmp, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with stack.client() as client:
        runs = client.read_flow_runs()
    newest = max(runs, key=lambda r: r.created)
    assert newest.state.name == "Completed"
    assert (stack.store() / "jobs" / str(newest.id) / "1" / "output" / "e004.txt").is_file()
    assert (stack.store() / "jobs" / str(newest.id) / "0" / "output" / "e000.txt").is_file()

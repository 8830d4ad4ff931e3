"""Job arrays without a server: reading array files, checking rows, planning shards, the
array's record in a real local store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobcloud.blocks.errors import ParameterError
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.deployments.jobs.arrays import plan_array, read_array_file, retry_rows, rows_over
from jobcloud.flows.array_manifest import ElementRow, counts_of, counts_text, merged_manifest, write_run_rows
from jobcloud.flows.array_request import ArrayRequest, element_requests
from jobcloud.flows.catalog import EntrypointRef, load_catalog
from jobcloud.flows.request import JobRequest

ROOT = Path(__file__).resolve().parents[2]
REF = EntrypointRef.parse("linefit/v1/train")


@pytest.fixture
def entry():
    return load_catalog(ROOT / "application_config.yaml").get(REF)


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    s = JobStore(str(tmp_path / "store"))
    for key in ("config/a.yaml", "data/d0.csv", "data/d1.csv", "data/d2.csv"):
        s.write_bytes(key, b"x\n")
    return s


def test_csv_jsonl_and_yaml_give_the_same_rows(tmp_path: Path) -> None:
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("config_id,data_ids,env.LINEFIT_EPOCHS\nconfig/a.yaml,data/d0.csv;data/d1.csv,5\nconfig/a.yaml,data/d2.csv,\n")
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(
        '{"config_id": "config/a.yaml", "data_ids": ["data/d0.csv", "data/d1.csv"], "env": {"LINEFIT_EPOCHS": "5"}}\n\n'
        '{"config_id": "config/a.yaml", "data_ids": ["data/d2.csv"]}\n'
    )
    yaml_file = tmp_path / "a.yaml"
    yaml_file.write_text(
        "elements:\n"
        "  - {config_id: config/a.yaml, data_ids: [data/d0.csv, data/d1.csv], env: {LINEFIT_EPOCHS: '5'}}\n"
        "  - {config_id: config/a.yaml, data_ids: [data/d2.csv]}\n"
    )
    rows = read_array_file(csv_file)
    assert rows == read_array_file(jsonl) == read_array_file(yaml_file)
    assert rows[0]["env"] == {"LINEFIT_EPOCHS": "5"} and rows[1]["data_ids"] == ["data/d2.csv"]


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("a.txt", "x", ["unknown format", ".csv"]),
        ("a.jsonl", '{"data_ids": []}\n[1]\n', ["line 2", "not a JSON object"]),
        ("a.jsonl", "{oops\n", ["line 1", "not JSON"]),
        ("a.yaml", "a: [", ["not valid YAML"]),
        ("a.csv", "data_ids,x.y\nd,1\n", ["'x.y'", "NAME.KEY"]),
    ],
)
def test_unreadable_array_files_say_where(tmp_path: Path, name: str, text: str, words: list[str]) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ParameterError) as err:
        read_array_file(path)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"colour": "red"}, ["array row 2", "unknown column 'colour'", "data_ids"]),
        ({"data_ids": ["data/../etc"]}, ["array row 2", "field data_ids", ".."]),
        ({"env": {"PATH": "/x"}}, ["array row 2", "field env", "PATH", "LINEFIT_EPOCHS"]),
        ({"timeout": -3}, ["array row 2", "field timeout"]),
        ({"index": "x"}, ["array row 2", "field index"]),
        ({"index": 0}, ["array row 2", "index 0 appears twice"]),
    ],
)
def test_a_bad_row_is_named_with_its_field(entry, row: dict, words: list[str]) -> None:
    base = JobRequest(config_id="config/a.yaml")
    rows = [{"data_ids": ["data/d0.csv"]}, {"data_ids": ["data/d1.csv"], **row}]
    with pytest.raises(ParameterError) as err:
        list(element_requests(entry, base, rows))
    for word in words:
        assert word in str(err.value)


def test_rows_override_the_base(entry) -> None:
    base = JobRequest(config_id="config/a.yaml", data_ids=["data/d0.csv"], env={"LINEFIT_EPOCHS": "3"})
    got = dict(element_requests(entry, base, [{}, {"data_ids": ["data/d1.csv"], "env": {"LINEFIT_EPOCHS": "9"}, "index": 7}]))
    assert got[0].data_ids == ["data/d0.csv"] and got[0].env == {"LINEFIT_EPOCHS": "3"}
    assert got[7].data_ids == ["data/d1.csv"] and got[7].env == {"LINEFIT_EPOCHS": "9"}


def test_plan_checks_size_inputs_and_splits_shards(entry, store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    base = JobRequest(config_id="config/a.yaml")
    rows = [{"data_ids": [f"data/d{i % 3}.csv"]} for i in range(10)]
    plan = plan_array(entry, base, rows, store, shards=3, parallel=2)
    assert [len(s.elements) for s in plan.shards] == [3, 4, 3]
    assert len({s.id for s in plan.shards}) == 1 and plan.array_id
    assert sorted(e["index"] for s in plan.shards for e in s.elements) == list(range(10))
    assert plan.base.data_ids == ["data/d0.csv"]  # the form's required input, from row 1
    one = plan_array(entry, base, rows, store)
    assert len(one.shards) == 1 and one.shards[0].id == ""  # the run's own id becomes the array's
    monkeypatch.setenv("JOBCLOUD_ARRAY_SHARD_SIZE", "4")
    assert len(plan_array(entry, base, rows, store).shards) == 3
    with pytest.raises(ParameterError, match="no elements"):
        plan_array(entry, base, [], store)
    monkeypatch.setenv("JOBCLOUD_ARRAY_MAX", "5")
    with pytest.raises(ParameterError, match="JOBCLOUD_ARRAY_MAX"):
        plan_array(entry, base, rows, store)
    monkeypatch.delenv("JOBCLOUD_ARRAY_MAX")
    with pytest.raises(ParameterError, match="array row 2.*data/missing.csv"):
        plan_array(entry, base, [rows[0], {"data_ids": ["data/missing.csv"]}], store)


def test_array_over_a_prefix_is_one_element_per_entry(store: JobStore) -> None:
    assert rows_over(store, "data") == [{"data_ids": [f"data/d{i}.csv"]} for i in range(3)]
    with pytest.raises(ParameterError, match="nothing under"):
        rows_over(store, "nothing/here")


def _row(index: int, state: str, minutes: int) -> ElementRow:
    return ElementRow(
        index=index,
        state=state,
        parameters={"data_ids": [f"data/d{index}.csv"]},
        finished_at=datetime.now(UTC) + timedelta(minutes=minutes),
    )


def test_runs_merge_and_the_later_row_wins(store: JobStore) -> None:
    write_run_rows(store, "arr", "run-1", [_row(0, "Completed", 0), _row(1, "Failed", 0), _row(2, "TimedOut", 0)])
    assert retry_rows(store, "arr") == [{"data_ids": ["data/d1.csv"], "index": 1}, {"data_ids": ["data/d2.csv"], "index": 2}]
    write_run_rows(store, "arr", "run-2", [_row(1, "Completed", 1), _row(2, "Completed", 1)])
    manifest = merged_manifest(store, "arr", REF, 3)
    assert manifest.state == "Completed" and manifest.counts == {"Completed": 3} and sorted(manifest.runs) == ["run-1", "run-2"]
    with pytest.raises(ParameterError, match="every element completed"):
        retry_rows(store, "arr")
    with pytest.raises(ParameterError, match="no array"):
        retry_rows(store, "other")


def test_counts_read_as_a_sentence() -> None:
    rows = [_row(0, "Completed", 0), _row(1, "Failed", 0), _row(2, "TimedOut", 0), _row(3, "NotStarted", 0)]
    assert counts_text(counts_of(rows), 4) == "1 of 4 completed, 1 failed, 1 timed out, 1 not started"


def test_the_array_parameter_is_in_every_job_flow(entry) -> None:
    from jobcloud.flows.job import make_flow

    flow = make_flow(REF, entry)
    schema = flow.parameters.model_dump()
    assert "array" in schema["properties"] and "array" not in schema.get("required", [])
    assert ArrayRequest(elements=[{"data_ids": ["a"]}]).parallel == 0


def test_max_failures_stops_starting_elements() -> None:
    from jobcloud.flows.array_run import ElementTally

    tally = ElementTally(todo=iter([(i, None, {}) for i in range(10)]), total=10, max_failures=2)
    states = ["Completed", "Failed", "Completed", "TimedOut"]
    for i, state in enumerate(states):
        assert tally.next() is not None
        tally.record(ElementRow(index=i, state=state))
    assert tally.next() is None and tally.failed == 2 and tally.done == 4

"""TES without a server: the state mapping, a task -> its plan (paths, URLs, ownership,
resources, backend_parameters), page tokens, the folders a task mounts, and the models
against the official schema."""

from __future__ import annotations

import pytest

from jobcloud.blocks.store.job_store import JobStore
from jobcloud.blocks.url_policy import UrlPolicy
from jobcloud.deployments.http_api.auth import Principal
from jobcloud.deployments.http_api.errors import ApiError
from jobcloud.deployments.http_api.tes import tasks
from jobcloud.deployments.http_api.tes.models import TesState, TesTask
from jobcloud.deployments.http_api.tes.rules import TesRules
from jobcloud.deployments.http_api.tes.states import tes_state
from jobcloud.deployments.http_api.tes.translate import key_of_url, plan_of, store_base, stored_document
from jobcloud.flows.tes_plan import EXECUTOR_ERROR_STATE, ExecutorPlan, InputPlan, OutputPlan, TesPlan, static_folder
from tests.tes_schema import validate_task

ALICE = Principal(user="alice")
ADMIN = Principal(user="root", role="admin")
# Any image, no URL outside the store: the allow-lists have tests of their own (test_tes_rules.py).
ANY = TesRules(images=["*"], url_policy=UrlPolicy())


@pytest.mark.parametrize(
    "kind, name, phase, expected",
    [
        ("SCHEDULED", "Scheduled", None, TesState.QUEUED),
        ("SCHEDULED", "Late", None, TesState.QUEUED),
        ("PENDING", "Pending", None, TesState.QUEUED),
        ("RUNNING", "Running", "preprocessing", TesState.INITIALIZING),
        ("RUNNING", "Running", None, TesState.RUNNING),
        ("RUNNING", "Running", "running", TesState.RUNNING),
        ("RUNNING", "Running", "postprocessing", TesState.RUNNING),
        ("COMPLETED", "Completed", None, TesState.COMPLETE),
        ("FAILED", EXECUTOR_ERROR_STATE, None, TesState.EXECUTOR_ERROR),
        ("FAILED", "Failed", None, TesState.SYSTEM_ERROR),
        ("FAILED", "TimedOut", None, TesState.SYSTEM_ERROR),
        ("CRASHED", "Crashed", None, TesState.SYSTEM_ERROR),
        ("CANCELLING", "Cancelling", None, TesState.CANCELING),
        ("CANCELLED", "Cancelled", None, TesState.CANCELED),
        ("PAUSED", "Suspended", None, TesState.PAUSED),
        (None, None, None, TesState.UNKNOWN),
    ],
)
def test_state_mapping(kind, name, phase, expected) -> None:
    assert tes_state(kind, name, phase) == expected


@pytest.fixture
def store(tmp_path) -> JobStore:
    s = JobStore(str(tmp_path / "store"))
    s.write_bytes("users/alice/in.txt", b"hello\n")
    return s


def _task(**extra) -> TesTask:
    body = {"executors": [{"image": "alpine", "command": ["cat", "/data/in.txt"]}], **extra}
    validate_task(body)  # every task the tests send is one the spec allows
    return TesTask.model_validate(body)


def test_urls_of_a_local_store(store) -> None:
    base = store_base(store)
    assert base == f"file://{store.root}"
    assert key_of_url(f"{base}/users/alice/in.txt", store) == "users/alice/in.txt"
    assert key_of_url(f"{store.root}/users/alice/in.txt", store) == "users/alice/in.txt"  # a bare path
    assert key_of_url(f"{base}/users/../etc/passwd", store) is None
    assert key_of_url("s3://elsewhere/x", store) is None


def test_a_plan(store) -> None:
    base = store_base(store)
    task = _task(
        inputs=[
            {"url": f"{base}/users/alice/in.txt", "path": "/data/in.txt"},
            {"content": "a,b\n", "path": "/data/inline.csv"},
            {"url": "https://example.org/x", "path": "/data/x"},
        ],
        outputs=[{"url": f"{base}/users/alice/out", "path": "/out", "type": "DIRECTORY"}],
        volumes=["/vol/A"],
        resources={"cpu_cores": 2, "ram_gb": 1.5, "disk_gb": 10, "backend_parameters": {"GPU": "1", "VmSize": "big"}},
    )
    plan = plan_of(task, store, ALICE, ANY)
    assert plan.inputs[0].key == "users/alice/in.txt"
    assert plan.inputs[1].content == "a,b\n"
    assert plan.inputs[2].foreign_url == "https://example.org/x"  # created; the run ends SYSTEM_ERROR
    assert "JOBCLOUD_API_TES_INPUT_URLS" in (plan.inputs[2].why or "")
    assert plan.outputs[0].key == "users/alice/out" and plan.outputs[0].type == "DIRECTORY"
    assert (plan.cpu, plan.memory_mb, plan.disk_gb, plan.gpu) == (2.0, 1536, 10, 1)
    assert plan.mount_roots() == ["/data", "/out", "/vol/A"]
    # Unsupported backend_parameters are not stored (TES).
    assert stored_document(task)["resources"]["backend_parameters"] == {"GPU": "1"}


@pytest.mark.parametrize(
    "extra, status, field",
    [
        ({"inputs": [{"path": "/data/a"}]}, 400, "inputs[0].url"),
        ({"inputs": [{"url": "x", "path": "data/a"}]}, 400, "inputs[0].path"),
        ({"inputs": [{"url": "x", "path": "/data/../etc/a"}]}, 400, "inputs[0].path"),
        ({"inputs": [{"url": "x", "path": "/proc/a"}]}, 400, "inputs[0].path"),
        ({"inputs": [{"content": "x", "path": "/a"}]}, 400, "inputs[0].path"),
        ({"inputs": [{"content": "x", "path": "/d", "type": "DIRECTORY"}]}, 400, "inputs[0].type"),
        ({"inputs": [{"content": "x", "path": "/d/a"}, {"content": "y", "path": "/d/a"}]}, 400, "inputs[1].path"),
        ({"inputs": [{"url": "{base}/users/bob/in.txt", "path": "/d/a"}]}, 403, "inputs[0].url"),
        ({"inputs": [{"url": "{base}/jobs/x/output/a", "path": "/d/a"}]}, 403, "inputs[0].url"),
        ({"outputs": [{"url": "{base}/users/bob/o", "path": "/d/o"}]}, 403, "outputs[0].url"),
        ({"outputs": [{"url": "s3://other/o", "path": "/d/o"}]}, 400, "outputs[0].url"),
        ({"outputs": [{"url": "{base}/users/alice/o", "path": "/d/*.txt"}]}, 400, "outputs[0].path_prefix"),
        ({"outputs": [{"url": "{base}/users/alice/o", "path": "/*.txt", "path_prefix": "/"}]}, 400, "outputs[0].path"),
        ({"outputs": [{"url": "{base}/users/alice/o", "path": "/d/a*.txt", "path_prefix": "/d/a"}]}, 400, "outputs[0].path_prefix"),
        ({"outputs": [{"url": "{base}/users/alice/o", "path": "/d/*.txt", "path_prefix": "/e/"}]}, 400, "outputs[0].path_prefix"),
        ({"outputs": [{"url": "{base}/users/bob/o/", "path": "/d/*.txt", "path_prefix": "/d/"}]}, 403, "outputs[0].url"),
        ({"outputs": [{"url": "s3://other/o/", "path": "/d/*.txt", "path_prefix": "/d/"}]}, 400, "outputs[0].url"),
        ({"volumes": ["relative"]}, 400, "volumes[0]"),
        (
            {"resources": {"backend_parameters": {"VmSize": "x"}, "backend_parameters_strict": True}},
            400,
            "resources.backend_parameters.VmSize",
        ),
        ({"resources": {"backend_parameters": {"gpu": "many"}}}, 400, "resources.backend_parameters.gpu"),
        ({"resources": {"backend_parameters": {"timeout_s": "0"}}}, 400, "resources.backend_parameters.timeout_s"),
    ],
)
def test_bad_tasks_name_the_field(store, extra, status, field) -> None:
    base = store_base(store)
    text = {
        k: [
            {kk: vv.replace("{base}", base) if isinstance(vv, str) else vv for kk, vv in i.items()} if isinstance(i, dict) else i for i in v
        ]
        if isinstance(v, list)
        else v
        for k, v in extra.items()
    }
    with pytest.raises(ApiError) as err:
        plan_of(_task(**text), store, ALICE, ANY)
    assert (err.value.status, err.value.field) == (status, field), err.value.message


def test_a_wildcard_output_is_a_folder_of_matches(store) -> None:
    base = store_base(store)
    task = _task(outputs=[{"url": f"{base}/users/alice/out/", "path": "/data/run*/*.txt", "path_prefix": "/data/"}])
    (out,) = plan_of(task, store, ALICE, ANY).outputs
    assert (out.key, out.path_prefix, out.is_pattern, out.folder()) == ("users/alice/out", "/data/", True, "/data")
    assert plan_of(task, store, ALICE, ANY).mount_roots() == ["/data"]


@pytest.mark.parametrize(
    ("pattern", "folder"),
    [("/data/*.txt", "/data"), ("/data/run*/x.txt", "/data"), ("/data/a/b?", "/data/a"), ("/d/[ab]/*", "/d"), ("/*.txt", "/")],
)
def test_the_folder_of_a_pattern(pattern: str, folder: str) -> None:
    assert static_folder(pattern) == folder


def test_object_urls_of_other_buckets_and_the_store_spelled_otherwise() -> None:
    """An allowed object URL of another bucket is read by the flow; the job store's own bucket
    spelled otherwise (`S3://JOBS/...`) is still the job store: another user's area is a 403
    even under a pattern that allows every bucket."""
    s3 = JobStore("s3://jobs/jc", {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}})
    rules = TesRules(images=["*"], url_policy=UrlPolicy(patterns=["s3://*"]))
    with pytest.raises(ApiError) as err:
        plan_of(_task(inputs=[{"url": "S3://JOBS/jc/users/bob/in.txt", "path": "/d/a"}]), s3, ALICE, rules)
    assert (err.value.status, err.value.field) == (403, "inputs[0].url")
    mine = plan_of(_task(inputs=[{"url": "S3://Jobs/jc/users/alice/in.txt", "path": "/d/a"}]), s3, ALICE, rules)
    assert mine.inputs[0].key == "users/alice/in.txt"
    task = _task(
        inputs=[
            {"url": "s3://public/set/a.csv", "path": "/d/a.csv"},
            {"url": "s3://public/set/", "path": "/d/set", "type": "DIRECTORY"},
        ]
    )
    plan = plan_of(task, s3, ALICE, rules)
    assert [(i.url, i.type) for i in plan.inputs] == [("s3://public/set/a.csv", "FILE"), ("s3://public/set", "DIRECTORY")]
    off = plan_of(task, s3, ALICE, ANY)  # no pattern: created, ends SYSTEM_ERROR saying why
    assert off.inputs[0].foreign_url == "s3://public/set/a.csv" and "JOBCLOUD_API_TES_INPUT_URLS" in (off.inputs[0].why or "")


def test_a_task_without_a_timeout_gets_the_default(store) -> None:
    assert plan_of(_task(), store, ALICE, ANY, default_timeout_s=600).timeout_s == 600
    asked = _task(resources={"backend_parameters": {"timeout_s": "90000"}})
    assert plan_of(asked, store, ALICE, ANY, default_timeout_s=600).timeout_s == 90000  # a task may ask for longer


def test_executor_paths_are_checked(store) -> None:
    task = TesTask.model_validate({"executors": [{"image": "alpine", "command": ["true"], "stdout": "out.txt"}]})
    with pytest.raises(ApiError) as err:
        plan_of(task, store, ALICE, ANY)
    assert err.value.field == "executors[0].stdout"


def test_an_admin_reads_any_key(store) -> None:
    task = _task(inputs=[{"url": f"{store_base(store)}/users/bob/in.txt", "path": "/d/a"}])
    assert plan_of(task, store, ADMIN, ANY).inputs[0].key == "users/bob/in.txt"


def test_page_tokens_round_trip_and_forgeries_fail() -> None:
    from datetime import UTC, datetime

    mark = tasks.PageMark(time=datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=UTC), ids=["a", "b"])
    token = tasks.page_token(mark, "alice")
    assert tasks.read_page_token(token, "alice") == mark
    for bad in ("", "abc", "NTEy", tasks.page_token(mark, "bob"), token[:-2]):
        with pytest.raises(ApiError) as err:
            tasks.read_page_token(bad, "alice")
        assert err.value.status == 400 and err.value.field == "page_token"


def test_the_next_mark_keeps_every_run_answered_at_its_instant() -> None:
    """Runs expected to start at the same instant, split over pages: each page's mark names all
    of those answered so far, so none comes back and none is skipped."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    t1, t2 = datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    run = lambda i, t: SimpleNamespace(id=i, expected_start_time=t)  # noqa: E731
    first = tasks.next_mark([run("x", t1), run("a", t2)], None)
    assert (first.time, first.ids) == (t2, ["a"])
    second = tasks.next_mark([run("b", t2)], first)
    assert second.ids == ["a", "b"]
    third = tasks.next_mark([run("c", t2), run("d", datetime(2025, 1, 1, tzinfo=UTC))], second)
    assert third.ids == ["d"]


def test_tes_tags_never_pass_for_the_owner() -> None:
    tags = tasks.run_tags("alice", {"user": "bob"})
    assert "user:alice" in tags and "user:bob" not in tags


def test_mount_roots_nest() -> None:
    plan = TesPlan(
        executors=[ExecutorPlan(image="a", command=["x"], stdout="/data/out/log.txt")],
        inputs=[InputPlan(path="/data/in/a.txt", content="x")],
        outputs=[OutputPlan(path="/data", type="DIRECTORY", key="users/a/o", url="file:///s/users/a/o")],
        store_url="file:///s",
    )
    assert plan.mount_roots() == ["/data"]

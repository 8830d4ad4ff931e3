"""GA4GH TES end to end with a real client: py-tes against `jobcloud api serve`, a real Prefect
server, a real JobCloud worker (`prefect worker start --pool cpu` after `jobcloud deploy`),
Podman and SeaweedFS as the job store. Every answer py-tes gets in this module is validated
against the official v1.1 schema (tests/tes_schema.py) on its way to the client.

One stack serves the whole module: starting it is most of the wall time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import tes
from tes import client as tes_client
from tes.utils import unmarshal

from jobcloud.deployments.server.processes import Proc
from tests.api_fixtures import TOKENS
from tests.conftest import job_containers
from tests.e2e.tes_stack import tes_services
from tests.file_server import FileServer, Page
from tests.integration.seaweed import Seaweed
from tests.tes_schema import spec_path, validate_answer
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

BUSYBOX = "localhost/jobcloud/busybox:1"
BUCKET = "tes-e2e"
# Buckets outside the job store: one the URL allow-list names, one it does not.
PUBLIC_BUCKET, PRIVATE_BUCKET = "tes-e2e-public", "tes-e2e-private"
FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


class TesStack:
    """The running stack: py-tes clients per user, the store's URL base and an S3 client."""

    def __init__(self, url: str, api: Proc, worker: Proc, seaweed: Seaweed, engine: str, files: FileServer) -> None:
        self.url, self.api, self.worker, self.seaweed, self.engine = url, api, worker, seaweed, engine
        self.files = files  # an HTTP server of input files, on the URL allow-list
        self.s3 = seaweed.client()
        self.base = f"s3://{BUCKET}/jc"
        self.checked: list[str] = []  # "METHOD /spec/path" of every answer validated

    def client(self, user: str = "alice") -> tes.HTTPClient:
        return tes.HTTPClient(self.url, token=TOKENS[user], timeout=30)

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` at job-store key ``key``; its TES URL."""
        self.s3.put_object(Bucket=BUCKET, Key=f"jc/{key}", Body=data)
        return f"{self.base}/{key}"

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=BUCKET, Key=f"jc/{key}")["Body"].read()

    def wait(self, task_id: str, want: set[str] = FINAL, user: str = "alice", timeout: float = 180) -> tes.Task:
        """Poll (MINIMAL, as py-tes's own wait does) until the task's state is in ``want``."""
        cli = self.client(user)
        seen: list[str] = []

        def reached() -> tes.Task | None:
            task = cli.get_task(task_id, "MINIMAL")
            seen.append(task.state)
            return task if task.state in want else None

        return wait_until(
            reached,
            timeout,
            interval=0.5,
            message=lambda: f"task {task_id} in {sorted(want)}, seen {seen[-3:]}; worker:\n{self.worker.tail()}\napi:\n{self.api.tail()}",
        )


@pytest.fixture(scope="module", autouse=True)
def schema_checked_answers() -> Iterator[list[str]]:
    """Every 2xx answer py-tes receives in this module is validated against the v1.1 schema
    before py-tes reads it (its own models are laxer in places, stricter in others)."""
    checked: list[str] = []
    original = tes_client.send_request

    def send(paths: list[str], method: str = "get", kwargs_requests: dict[str, Any] | None = None, **kwargs: Any) -> requests.Response:
        response = original(paths, method, kwargs_requests, **kwargs)
        if response.status_code == 200:
            path = spec_path(requests.utils.urlparse(response.url).path)
            validate_answer(path, method, response.json())
            checked.append(f"{method.upper()} {path}")
        return response

    tes_client.send_request = send
    try:
        yield checked
    finally:
        tes_client.send_request = original


def _list(stack: TesStack, user: str = "alice", **params: Any) -> tes.ListTasksResponse:
    """GET /tasks with the filters py-tes's list_tasks does not send (name_prefix, state, tags),
    through py-tes's own request path and model."""
    cli = stack.client(user)
    query = {k: v for k, v in params.items() if v is not None}
    paths = tes_client.append_suffixes_to_url(cli.urls, ["/tasks"])
    response = tes_client.send_request(paths=paths, kwargs_requests=cli._request_params(params=query))
    return unmarshal(response.json(), tes.ListTasksResponse)


@pytest.fixture(scope="module")
def stack(engine: str, images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TesStack]:
    tmp = tmp_path_factory.mktemp("e2e-tes")
    seaweed = Seaweed(tmp / "seaweed").start()
    files = FileServer()
    try:
        for bucket in (BUCKET, PUBLIC_BUCKET, PRIVATE_BUCKET):
            seaweed.make_bucket(bucket)
        env = {
            **seaweed.env(),
            "JOBCLOUD_STORAGE": f"s3://{BUCKET}/jc",
            # The tasks here run busybox (not a catalog image) and read inputs from a local HTTP
            # server (loopback: reachable only through a pattern naming its host literally).
            "JOBCLOUD_API_TES_IMAGES": "localhost/jobcloud/*",
            "JOBCLOUD_API_TES_INPUT_URLS": f"{files.url('/allowed/*')},s3://{PUBLIC_BUCKET}/*",
            "JOBCLOUD_API_TES_INPUT_MAX_BYTES": "100000",
        }
        with tes_services(tmp, engine, env, "e2e-tes-cpu") as (url, api, worker):
            yield TesStack(url, api, worker, seaweed, engine, files)
    finally:
        seaweed.stop()
        files.stop()


def test_service_info_names_the_s3_store(stack: TesStack) -> None:
    info = stack.client().get_service_info()
    assert info.storage == [stack.base]
    assert "gpu" in info.tes_resources_backend_parameters


def test_create_wait_get_full(stack: TesStack) -> None:
    data = b"hello tes\n" * 100
    url = stack.put("users/alice/e2e/in.txt", data)
    task = tes.Task(
        name="e2e-full",
        tags={"suite": "e2e", "case": "full"},
        inputs=[tes.Input(url=url, path="/data/in.txt"), tes.Input(content="a note\n", path="/data/note.txt")],
        outputs=[tes.Output(url=f"{stack.base}/users/alice/e2e/out/wc.txt", path="/out/wc.txt")],
        executors=[tes.Executor(image=BUSYBOX, command=["sh", "-c", "wc -c /data/in.txt > /out/wc.txt; cat /data/note.txt"])],
        resources=tes.Resources(cpu_cores=1, ram_gb=0.25),
    )
    cli = stack.client()
    task_id = cli.create_task(task)
    done = cli.wait(task_id, timeout=180)
    assert done.state == "COMPLETE", stack.client().get_task(task_id, "FULL")
    full = cli.get_task(task_id, "FULL")
    assert full.name == "e2e-full" and full.tags == {"suite": "e2e", "case": "full"}
    assert full.inputs[1].content == "a note\n"
    (log,) = full.logs
    assert [e.exit_code for e in log.logs] == [0] and log.logs[0].stdout.strip() == "a note"
    assert log.start_time and log.end_time and log.logs[0].start_time
    (out,) = log.outputs
    assert out.path == "/out/wc.txt" and out.url.endswith("/users/alice/e2e/out/wc.txt")
    got = stack.get("users/alice/e2e/out/wc.txt")
    assert got.split()[0] == str(len(data)).encode() and int(out.size_bytes) == len(got)
    # A task is a job of its owner: listed by the job API as tes/v1/task (notified like one).
    job = requests.get(f"{stack.url}/jobs/{task_id}", headers={"Authorization": f"Bearer {TOKENS['alice']}"}, timeout=10)
    assert job.status_code == 200 and (job.json()["application"], job.json()["state"]) == ("tes", "Completed"), job.text
    basic = cli.get_task(task_id, "BASIC")
    assert basic.inputs[1].content is None and basic.logs[0].system_logs is None
    # Another user does not see it; a task id py-tes gets a 404 for raises.
    with pytest.raises(requests.HTTPError) as no:
        stack.client("bob").get_task(task_id, "MINIMAL")
    assert no.value.response.status_code == 404


def test_two_executors_share_a_file(stack: TesStack) -> None:
    task = tes.Task(
        name="e2e-share",
        outputs=[
            tes.Output(url=f"{stack.base}/users/alice/e2e/share/both.txt", path="/shared/both.txt"),
            # A wildcard output: every match, less path_prefix, under the url's folder.
            tes.Output(url=f"{stack.base}/users/alice/e2e/share/all/", path="/shared/*.txt", path_prefix="/shared/"),
        ],
        executors=[
            tes.Executor(image=BUSYBOX, command=["sh", "-c", "echo first > /shared/one.txt"]),
            tes.Executor(image=BUSYBOX, command=["sh", "-c", "cat one.txt > both.txt; echo second >> both.txt"], workdir="/shared"),
        ],
        volumes=["/shared"],
    )
    cli = stack.client()
    task_id = cli.create_task(task)
    assert cli.wait(task_id, timeout=180).state == "COMPLETE", cli.get_task(task_id, "FULL")
    assert stack.get("users/alice/e2e/share/both.txt") == b"first\nsecond\n"
    assert stack.get("users/alice/e2e/share/all/one.txt") == b"first\n"
    log = cli.get_task(task_id, "FULL").logs[0]
    assert [e.exit_code for e in log.logs] == [0, 0]
    assert sorted(o.url for o in log.outputs) == [
        f"{stack.base}/users/alice/e2e/share/all/both.txt",
        f"{stack.base}/users/alice/e2e/share/all/one.txt",
        f"{stack.base}/users/alice/e2e/share/both.txt",
    ]


def test_an_executor_error(stack: TesStack) -> None:
    task = tes.Task(
        name="e2e-fails",
        executors=[
            tes.Executor(image=BUSYBOX, command=["sh", "-c", "echo about to fail; exit 3"]),
            tes.Executor(image=BUSYBOX, command=["echo", "never runs"]),
        ],
    )
    cli = stack.client()
    task_id = cli.create_task(task)
    assert cli.wait(task_id, timeout=180).state == "EXECUTOR_ERROR"
    (log,) = cli.get_task(task_id, "FULL").logs
    assert [e.exit_code for e in log.logs] == [3] and "about to fail" in log.logs[0].stdout
    assert any("exited with code 3" in line for line in log.system_logs)


def test_cancel_a_long_task_leaves_no_container(stack: TesStack) -> None:
    cli = stack.client()
    task_id = cli.create_task(tes.Task(name="e2e-long", executors=[tes.Executor(image=BUSYBOX, command=["sleep", "300"])]))
    stack.wait(task_id, {"RUNNING"})
    # The executor's container is up before the cancel (so the cancel really stops one).
    wait_until(lambda: task_id in job_containers(stack.engine).values(), 60, interval=0.5, message="the executor's container")
    cli.cancel_task(task_id)
    assert stack.wait(task_id, {"CANCELED", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"}, timeout=90).state == "CANCELED"
    wait_until(lambda: task_id not in job_containers(stack.engine).values(), 30, interval=0.5, message="no container of the task")
    cli.cancel_task(task_id)  # cancelling an ended task: still {} and nothing changes
    assert cli.get_task(task_id, "MINIMAL").state == "CANCELED"


def test_list_with_filters_and_paging(stack: TesStack) -> None:
    cli = stack.client()
    ids = [
        cli.create_task(
            tes.Task(name=f"e2e-list-{i}", tags={"batch": "L", "n": str(i)}, executors=[tes.Executor(image=BUSYBOX, command=["true"])])
        )
        for i in range(3)
    ]
    for task_id in ids:
        assert cli.wait(task_id, timeout=180).state == "COMPLETE"
    # py-tes's own list call (views, paging), then the filters it does not send.
    assert set(ids) <= {t.id for t in cli.list_tasks(view="BASIC", page_size=2047).tasks}
    named = _list(stack, name_prefix="e2e-list-", view="BASIC")
    assert [t.id for t in named.tasks] == ids[::-1]  # newest first
    assert all(t.name.startswith("e2e-list-") for t in named.tasks)
    assert [t.id for t in _list(stack, tag_key="n", tag_value="1").tasks] == [ids[1]]
    assert [t.id for t in _list(stack, tag_key="batch").tasks] == ids[::-1]
    complete = {t.id for t in _list(stack, state="COMPLETE").tasks}
    assert set(ids) <= complete and not {t.id for t in _list(stack, state="EXECUTOR_ERROR").tasks} & set(ids)
    paged: list[str] = []
    token = None
    while True:
        page = cli.list_tasks(view="MINIMAL", page_size=1, page_token=token)
        assert len(page.tasks) <= 1
        paged += [t.id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert paged == [t.id for t in cli.list_tasks(page_size=2047).tasks] and set(ids) <= set(paged)
    assert not _list(stack, user="bob", name_prefix="e2e-list-").tasks


def test_an_image_off_the_allow_list_is_refused(stack: TesStack) -> None:
    with pytest.raises(requests.HTTPError) as err:
        stack.client().create_task(tes.Task(name="e2e-alpine", executors=[tes.Executor(image="alpine", command=["true"])]))
    assert err.value.response.status_code == 400
    error = err.value.response.json()["error"]
    assert error["field"] == "executors[0].image" and "JOBCLOUD_API_TES_IMAGES" in error["message"]
    assert not _list(stack, name_prefix="e2e-alpine").tasks


def test_url_inputs(stack: TesStack) -> None:
    """An allowed URL is read by the worker; a 404, a file over the size limit and a URL off the
    allow-list each still make a task, which ends SYSTEM_ERROR saying why."""
    stack.files.pages["/allowed/in.txt"] = Page(b"from the web\n")
    stack.files.pages["/allowed/big.bin"] = Page(b"b" * 200_000)
    stack.files.pages["/other/in.txt"] = Page(b"not for jobs\n")
    cli = stack.client()

    def task(name: str, url: str) -> str:
        out = tes.Output(url=f"{stack.base}/users/alice/e2e/url/{name}.txt", path="/out/copy.txt")
        run = tes.Executor(image=BUSYBOX, command=["cp", "/data/in.txt", "/out/copy.txt"])
        return cli.create_task(
            tes.Task(name=f"e2e-url-{name}", inputs=[tes.Input(url=url, path="/data/in.txt")], outputs=[out], executors=[run])
        )

    stack.s3.put_object(Bucket=PUBLIC_BUCKET, Key="set/in.txt", Body=b"from another bucket\n")
    stack.s3.put_object(Bucket=PRIVATE_BUCKET, Key="set/in.txt", Body=b"not for jobs\n")
    ids = {
        "ok": task("ok", stack.files.url("/allowed/in.txt")),
        "missing": task("missing", stack.files.url("/allowed/absent.txt")),
        "big": task("big", stack.files.url("/allowed/big.bin")),
        "off": task("off", stack.files.url("/other/in.txt")),
        "bucket": task("bucket", f"s3://{PUBLIC_BUCKET}/set/in.txt"),
        "bucket-off": task("bucket-off", f"s3://{PRIVATE_BUCKET}/set/in.txt"),
    }
    ended = {name: cli.wait(task_id, timeout=180).state for name, task_id in ids.items()}
    assert ended == {
        "ok": "COMPLETE",
        "missing": "SYSTEM_ERROR",
        "big": "SYSTEM_ERROR",
        "off": "SYSTEM_ERROR",
        "bucket": "COMPLETE",
        "bucket-off": "SYSTEM_ERROR",
    }
    assert stack.get("users/alice/e2e/url/ok.txt") == b"from the web\n"
    assert stack.get("users/alice/e2e/url/bucket.txt") == b"from another bucket\n"  # with the job store's credentials
    for name, words in (("missing", "HTTP 404"), ("big", "100000"), ("off", "JOBCLOUD_API_TES_INPUT_URLS"), ("bucket-off", PRIVATE_BUCKET)):
        (log,) = cli.get_task(ids[name], "FULL").logs
        assert log.logs == [] and any(words in line for line in log.system_logs), (name, log.system_logs)
    assert "/other/in.txt" not in stack.files.hits


def test_every_operation_was_validated(stack: TesStack, schema_checked_answers: list[str]) -> None:
    """Runs last: each operation of the spec answered at least once, each answer validated."""
    want = {"GET /service-info", "POST /tasks", "GET /tasks", "GET /tasks/{id}", "POST /tasks/{id}:cancel"}
    assert want <= set(schema_checked_answers), sorted(set(schema_checked_answers))

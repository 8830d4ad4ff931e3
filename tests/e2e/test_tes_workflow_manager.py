"""Real workflow managers run a two-step workflow (step 2 reads step 1's output) through their
GA4GH TES executors against JobCloud: `jobcloud api serve` with a real Prefect server, a real
JobCloud worker after `jobcloud deploy`, Podman, and a local job store. The managers live in their
own venvs under .venv-wfm (scripts/setup-wfm.sh, run by scripts/setup.sh):

- cwl-tes 0.3.0 (cwltool 1.0.20191022103248) runs tests/data/cwl/two_steps.cwl;
- Snakemake 9 with snakemake-executor-plugin-tes 0.1.3 runs tests/data/snakemake/Snakefile, its
  tasks in localhost/jobcloud/wfm-snakemake (images/wfm-snakemake), files through S3
  (SeaweedFS on the host's address, which the tasks' containers reach).

Why a local store: cwl-tes without a remote storage URL speaks `file://` URLs of a shared
filesystem (its inputs, its `--tmp-outdir-prefix` output folders), which JobCloud takes for a
local store when they lie in the caller's `users/<name>/` area.

Why a gateway in front of the API: cwl-tes's `--token` must be an RS256 JWT that cwl-tes itself
verifies with PyJWT without naming an audience, so every token with an `aud` claim is refused
before any request ("Token is not valid"), while JobCloud's OIDC tokens must carry `aud` and its
API keys are no JWTs. cwl-tes therefore runs without a token behind a small reverse proxy that
adds alice's key, as a site's authenticating ingress would; the proxy also records every request
body, so the test checks exactly what the manager sent.

One stack serves the module: starting it is most of the wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from jobcloud.deployments.imaging.build import build
from jobcloud.deployments.server.processes import Proc
from tests.api_fixtures import TOKENS, auth
from tests.conftest import ROOT
from tests.e2e.tes_stack import tes_services
from tests.integration.seaweed import ACCESS_KEY, SECRET_KEY, Seaweed
from tests.tes_schema import validate_answer

pytestmark = pytest.mark.e2e

TES = "/ga4gh/tes/v1"
CWL_TES = ROOT / ".venv-wfm" / "cwl-tes" / "bin" / "cwl-tes"
CWL = ROOT / "tests" / "data" / "cwl"
SNAKEMAKE = ROOT / ".venv-wfm" / "snakemake" / "bin" / "snakemake"
SNAKEFILE = ROOT / "tests" / "data" / "snakemake" / "Snakefile"
SNAKEMAKE_IMAGE = "localhost/jobcloud/wfm-snakemake:9.27.1"  # images/images.yaml: wfm-snakemake
WORDS = "hello jobcloud\nsecond line\n"
FINAL = "step2: HELLO JOBCLOUD\nstep2: SECOND LINE\n"


@dataclass
class Call:
    """One request that passed the gateway, and the API's answer."""

    method: str
    path: str
    request: Any
    status: int
    answer: Any


@dataclass
class Gateway:
    """A reverse proxy on a free loopback port that adds ``token`` to every request it forwards
    to ``upstream`` and records each request and answer (JSON bodies decoded)."""

    upstream: str
    token: str
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else None
                answer = requests.request(
                    self.command,
                    gateway.upstream + self.path,
                    data=body,
                    headers={"Authorization": f"Bearer {gateway.token}", "Content-Type": "application/json"},
                    timeout=60,
                )
                gateway.calls.append(Call(self.command, self.path, _json(body), answer.status_code, _json(answer.content)))
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = forward  # noqa: N815 - the stdlib's names

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
                pass  # the calls are recorded; no access log on the test's stderr

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def posted_tasks(self) -> list[Call]:
        """Every POST /tasks that reached the gateway, in order."""
        return [c for c in self.calls if c.method == "POST" and c.path == f"{TES}/tasks"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _json(body: bytes | None) -> Any:
    """``body`` decoded as JSON, or its text when it is none."""
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


@dataclass
class LocalTesStack:
    """The running stack: the API's URL, the local job store's root, the API and worker."""

    url: str
    store: Path
    api: Proc
    worker: Proc


@pytest.fixture(scope="module")
def stack(engine: str, images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTesStack]:
    """`jobcloud api serve`, a Prefect server and a cpu worker after `jobcloud deploy`, on a
    local job store that the workflow manager shares (as tests/e2e/test_tes_e2e.py's stack,
    which is on S3)."""
    tmp = tmp_path_factory.mktemp("e2e-wfm")
    store = tmp / "store"
    store.mkdir()
    env = {"JOBCLOUD_STORAGE": str(store), "JOBCLOUD_API_TES_IMAGES": "localhost/jobcloud/*"}  # the steps run busybox
    with tes_services(tmp, engine, env, "e2e-wfm-cpu") as (url, api, worker):
        yield LocalTesStack(url, store, api, worker)


def _installed(tool: Path) -> None:
    """Fail, saying why, when scripts/setup-wfm.sh could not install ``tool``: a skip would let a
    broken install pass unseen in CI."""
    if not tool.exists():
        pytest.fail(f"{tool} is not installed: run scripts/setup-wfm.sh (scripts/setup.sh runs it) and read what it says")


def _completed(stack: LocalTesStack, posted: list[Call]) -> list[dict[str, Any]]:
    """The tasks of ``posted`` as alice sees them through the API itself (BASIC view, the
    answer validated against the v1.1 schema), in the order they were posted."""
    listed = requests.get(f"{stack.url}{TES}/tasks", params={"view": "BASIC"}, headers=auth("alice"), timeout=30)
    assert listed.status_code == 200, listed.text
    validate_answer("/tasks", "get", listed.json())
    tasks = {t["id"]: t for t in listed.json()["tasks"]}
    return [tasks[call.answer["id"]] for call in posted]


def _run_manager(
    stack: LocalTesStack, name: str, argv: Callable[[str], list[str]], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, list[Call], str]:
    """Run a workflow manager (``argv`` of the gateway's URL) through a recording gateway as alice;
    it must exit 0 (else the message shows its stderr, the tasks it posted and the worker).
    Returns the run, its POST /tasks calls and those as text (for assertion messages)."""
    gateway = Gateway(stack.url, TOKENS["alice"])
    try:
        run = subprocess.run(argv(gateway.url), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        gateway.stop()
    sent = json.dumps([c.__dict__ for c in gateway.posted_tasks()], indent=1)
    assert run.returncode == 0, f"{name}:\n{run.stderr[-5000:]}\nPOST /tasks:\n{sent[-5000:]}\nworker:\n{stack.worker.tail()}"
    return run, gateway.posted_tasks(), sent


def test_cwl_tes_runs_a_two_step_workflow(stack: LocalTesStack, tmp_path: Path) -> None:
    _installed(CWL_TES)
    area = stack.store / "users" / "alice" / "cwl-two-steps"
    (area / "in").mkdir(parents=True)
    text = area / "in" / "words.txt"
    text.write_text(WORDS)
    # Every folder cwltool makes for the steps lies in alice's area of the store, so each
    # output URL (and step 2's input, step 1's output) is one JobCloud accepts.
    run, posted, sent = _run_manager(
        stack,
        "cwl-tes",
        lambda url: [
            str(CWL_TES),
            "--tes",
            url,
            "--outdir",
            str(area / "final"),
            "--tmp-outdir-prefix",
            f"{area}/steps/",
            "--tmpdir-prefix",
            f"{area}/tmp/",
            str(CWL / "two_steps.cwl"),
            "--text",
            str(text),
        ],
        cwd=tmp_path,
        timeout=300,
    )

    # The workflow's output: step 2 read step 1's output.
    final = json.loads(run.stdout)["final"]
    assert Path(final["path"]).read_text() == FINAL

    # Each step became one TES task, with file:// URLs of the store that chain the steps.
    upper, prefix = posted
    assert (upper.request["name"], prefix.request["name"]) == ("upper", "prefix"), sent
    assert upper.status == prefix.status == 200, sent
    assert upper.request["inputs"][0]["url"] == text.as_uri()
    step1_out = {o["name"]: o["url"] for o in upper.request["outputs"]}["stdout"]
    assert prefix.request["inputs"][0]["url"] == step1_out and step1_out.endswith("/upper.txt")
    urls = [p["url"] for call in (upper, prefix) for p in call.request["inputs"] + call.request["outputs"]]
    assert all(u.startswith((area / "steps").as_uri() + "/") or u == text.as_uri() for u in urls), urls

    # Both reached COMPLETE.
    tasks = _completed(stack, [upper, prefix])
    assert [t["state"] for t in tasks] == ["COMPLETE", "COMPLETE"]
    assert [t["tags"]["CWLDocumentId"].rsplit("/", 1)[-1] for t in tasks] == ["upper.cwl", "prefix.cwl"]


def _host_address() -> str:
    """This machine's address on its default route: unlike loopback, containers on the engine's
    bridge network reach it (no packet is sent; the kernel only picks the route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("203.0.113.1", 9))  # TEST-NET-3: any routable unicast address picks the default route
        return probe.getsockname()[0]


@pytest.fixture(scope="module")
def container_s3(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """A SeaweedFS S3 store on the host's own address, for Snakemake's S3 storage plugin, which
    runs on the host and inside every task's container."""
    try:
        host = _host_address()
    except OSError as err:
        pytest.skip(f"no non-loopback address for containers to reach the S3 store: {err}")
    seaweed = Seaweed(tmp_path_factory.mktemp("wfm-s3"), host=host).start()
    try:
        seaweed.make_bucket("smk-e2e")
        yield seaweed
    finally:
        seaweed.stop()


def test_snakemake_runs_a_two_step_workflow(stack: LocalTesStack, container_s3: Seaweed, tmp_path: Path) -> None:
    """Snakemake 9 with snakemake-executor-plugin-tes 0.1.3: each job is a TES task whose only
    input is its job script (inline content); the task runs `python -m snakemake` in
    localhost/jobcloud/wfm-snakemake, which moves the files from and to S3 itself, so JobCloud
    sees no file URL at all."""
    _installed(SNAKEMAKE)
    build(["wfm-snakemake"], log=lambda m: None)  # a no-op when scripts/setup-wfm.sh built it
    s3 = container_s3.client()
    s3.put_object(Bucket="smk-e2e", Key="run/in/words.txt", Body=WORDS.encode())
    workdir = tmp_path / "workflow"
    workdir.mkdir()
    shutil.copy(SNAKEFILE, workdir / "Snakefile")
    # The plugin prints $GITHUB_WORKSPACE/funnel.log when a task fails (debug code left in
    # 0.1.3) and dies of a KeyError without it: give it an empty one, so a failure reads as one.
    (tmp_path / "funnel.log").write_text("")
    run, posted, sent = _run_manager(
        stack,
        "snakemake",
        lambda url: [
            str(SNAKEMAKE),
            "--executor",
            "tes",
            # py-tes 0.4 (the plugin pins < 0.5) posts to <url>/v1/tasks: TES 1.0's layout.
            "--tes-url",
            f"{url}/ga4gh/tes",
            "--container-image",
            SNAKEMAKE_IMAGE,
            "--jobs",
            "2",
            "--default-storage-provider",
            "s3",
            "--default-storage-prefix",
            "s3://smk-e2e/run",
            "--storage-s3-endpoint-url",
            container_s3.endpoint,
            "--storage-s3-access-key",
            ACCESS_KEY,
            "--storage-s3-secret-key",
            SECRET_KEY,
        ],
        cwd=workdir,
        timeout=400,
        env={**os.environ, "GITHUB_WORKSPACE": str(tmp_path)},
    )

    # The workflow's output: step 2 read step 1's output (through S3).
    assert s3.get_object(Bucket="smk-e2e", Key="run/out/final.txt")["Body"].read().decode() == FINAL

    # Each rule (not `all`, a local rule) became one TES task that reached COMPLETE.
    upper, prefix = posted
    assert upper.request["name"].startswith("snakejob.upper") and prefix.request["name"].startswith("snakejob.prefix"), sent
    for call in (upper, prefix):
        assert call.status == 200 and call.request["outputs"] == [], sent
        (script,) = call.request["inputs"]
        assert script["path"] == "/tmp/run_snakemake.sh" and "python -m snakemake" in script["content"]
        assert [e["image"] for e in call.request["executors"]] == [SNAKEMAKE_IMAGE]
    assert [t["state"] for t in _completed(stack, [upper, prefix])] == ["COMPLETE", "COMPLETE"]

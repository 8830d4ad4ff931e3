"""Notifications and callbacks of real jobs, on a real `prefect server start` (no mocks).

`jobcloud deploy` installs the notification automations from JOBCLOUD_NOTIFY_* settings; jobs
run with `jobcloud run --local` in in-container mode (`JOBCLOUD_RUNNER=process`: the command is
a subprocess, so no engine is needed); a real HTTP server gets the webhook and the callbacks,
aiosmtpd the mail. Receivers that are down, answer 500 or hang never fail or hold up a job.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobcloud.deployments.server.processes import PrefectServer
from tests.receivers import HttpReceiver, SmtpReceiver, closed_port, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JOBCLOUD = [sys.executable, "-m", "jobcloud.deployments.cli"]
# From a flow run's final state to the notification: the events pipeline, the triggers and the
# actions services, on a busy 2-core box.
NOTIFY_WAIT_S = 60

CATALOG = {
    "notif": {
        "v1": {
            "train": {
                "app": {"cmd": ["echo training; echo 'score 1' > output/score.txt; echo weights > model/model.bin"]},
                "handler": {
                    "image_url": "localhost/not/needed:1",
                    "files_down": {"data_ids": "data"},
                    "files_up": {"output": "output", "artifact": "model", "log": "log"},
                },
                "aws_resources": {"timeout": 60},
            },
            "fail": {
                "app": {"cmd": ["echo partial > log/app.log; echo broken >&2; exit 3"]},
                "handler": {"image_url": "localhost/not/needed:1", "files_up": {"log": "log"}},
            },
        }
    }
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    srv = PrefectServer(home=tmp_path_factory.mktemp("notify") / "ph", port=free_port())
    try:
        yield srv.start()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def webhook() -> Iterator[HttpReceiver]:
    r = HttpReceiver("ok")
    yield r
    r.stop()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpReceiver]:
    r = SmtpReceiver()
    yield r
    r.stop()


class Env:
    """`jobcloud` against the module's server, store and catalog."""

    def __init__(self, server: PrefectServer, root: Path) -> None:
        (root / "files").mkdir(parents=True, exist_ok=True)
        catalog = root / "catalog.yaml"
        catalog.write_text(yaml.safe_dump(CATALOG))
        self.env = server.env()
        self.env.update(
            JOBCLOUD_HOME=str(root / "home"),
            JOBCLOUD_STORAGE=str(root / "store"),
            JOBCLOUD_CONFIG=str(catalog),
            JOBCLOUD_RUNNER="process",
            JOBCLOUD_FILES_DIR=str(root / "files"),
            PYTHONPATH=str(ROOT),
        )
        self.env = {k: v for k, v in self.env.items() if not k.startswith("JOBCLOUD_NOTIFY_") and not k.startswith("JOBCLOUD_SMTP_")}
        self.root = root

    def __call__(self, *args: str, timeout: int = 300, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*JOBCLOUD, *args], cwd=self.root, env={**self.env, **extra}, capture_output=True, text=True, timeout=timeout)

    def run_job(self, *args: str) -> tuple[dict[str, Any], float]:
        """`jobcloud run ... --local --json`: its JSON object and how long the command took."""
        t = time.monotonic()
        proc = self("run", *args, "--local", "--json")
        took = time.monotonic() - t
        assert proc.stdout.strip(), proc.stderr
        return json.loads(proc.stdout), took


@pytest.fixture(scope="module")
def jc(server: PrefectServer, tmp_path_factory: pytest.TempPathFactory, webhook: HttpReceiver, smtp: SmtpReceiver) -> Env:
    env = Env(server, tmp_path_factory.mktemp("notify-jobs"))
    (env.root / "points.csv").write_text("x,y\n1,2\n")
    assert env("files", "put", str(env.root / "points.csv"), "data").returncode == 0
    notify = {
        "JOBCLOUD_NOTIFY_WEBHOOK_URL": f"http://127.0.0.1:{webhook.port}/hooks/jobcloud",
        "JOBCLOUD_NOTIFY_EMAIL_TO": "lab@lab.example,pi@lab.example",
        "JOBCLOUD_NOTIFY_EMAIL_FROM": "jobcloud@lab.example",
        "JOBCLOUD_SMTP_HOST": "127.0.0.1",
        "JOBCLOUD_SMTP_PORT": str(smtp.port),
        "JOBCLOUD_SMTP_SECURITY": "none",
    }
    proc = env("deploy", **notify)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in (
        "created  block jobcloud-notify-webhook",
        "created  block jobcloud-notify-email",
        "created  automation jobcloud-notify-finished",
        "created  automation jobcloud-notify-error",
    ):
        assert line in proc.stdout, proc.stdout
    again = env("deploy", **notify)  # idempotent
    assert "unchanged  automation jobcloud-notify-finished" in again.stdout, again.stdout
    assert "unchanged  block jobcloud-notify-email" in again.stdout, again.stdout
    return env


def _one(requests: list[Any], job_id: str) -> Any:
    found = [r for r in requests if job_id in r.body.decode()]
    assert len(found) == 1, [r.body for r in requests]
    return found[0]


def test_a_finished_job_notifies_by_webhook_and_email_and_calls_back(jc: Env, webhook: HttpReceiver, smtp: SmtpReceiver) -> None:
    callback = HttpReceiver("ok")
    try:
        job, _ = jc.run_job("notif/v1/train", "--data", "data/points.csv", "--callback-url", callback.url)
        assert job["state"] == "Completed", job
        job_id = job["id"]

        # The callback: every phase, then the final update with the output keys, in order.
        bodies = [r.json() for r in callback.wait_for(5, timeout=10)]
        assert all(r.method == "PATCH" and r.path == "/tasks/42" for r in callback.requests)
        assert [b["phase"] for b in bodies] == ["inputs-staged", "container-started", "container-exited", "outputs-uploaded", "final"]
        assert [b["status"] for b in bodies] == ["processing", "processing", "saving", "saving", "finished"]
        final = bodies[-1]
        assert final["state"] == "Completed" and final["job_id"] == job_id
        assert (final["application"], final["version"], final["entrypoint"]) == ("notif", "v1", "train")
        assert f"jobs/{job_id}/output/score.txt" in final["data_out"]
        assert f"jobs/{job_id}/artifact/model.bin" in final["data_out"]
        assert bodies[2]["details"]["exit_code"] == 0

        # The webhook: one JSON document naming everything.
        hook = _one(webhook.wait_for(1, timeout=NOTIFY_WAIT_S), job_id)
        doc = hook.json()
        assert hook.method == "POST" and hook.path == "/hooks/jobcloud"
        assert (doc["application"], doc["version"], doc["entrypoint"]) == ("notif", "v1", "train")
        assert doc["state"] == "Completed" and doc["event"] == "jobcloud.job.finished"
        assert doc["outputs"] == f"jobs/{job_id}/" and doc["store"] == jc.env["JOBCLOUD_STORAGE"]
        assert f"/runs/flow-run/{job_id}" in doc["ui_url"]

        # The mail: one per recipient, the same facts as text.
        mails = [m for m in smtp.wait_for(2, timeout=NOTIFY_WAIT_S) if job_id in m.content]
        assert sorted(r for m in mails for r in m.rcpt_tos) == ["lab@lab.example", "pi@lab.example"]
        text = mails[0].content
        assert f"Subject: JobCloud job notif/v1/train {job_id[:8]}: Completed" in text
        for line in (
            "application: notif",
            "version: v1",
            "entrypoint: train",
            "state: Completed",
            f"outputs: jobs/{job_id}/ in the job store {jc.env['JOBCLOUD_STORAGE']}",
        ):
            assert line in text, text
    finally:
        callback.stop()


def test_a_failed_job_notifies_the_error_with_its_message(jc: Env, webhook: HttpReceiver, smtp: SmtpReceiver) -> None:
    before_hooks, before_mails = len(webhook.requests), len(smtp.mails)
    job, _ = jc.run_job("notif/v1/fail")
    assert job["state"] == "Failed", job
    job_id = job["id"]
    webhook.wait_for(before_hooks + 1, timeout=NOTIFY_WAIT_S)
    doc = _one(webhook.requests[before_hooks:], job_id).json()
    assert doc["event"] == "jobcloud.job.error" and doc["state"] == "Failed"
    assert "exited with code 3" in doc["message"] and doc["entrypoint"] == "fail"
    mails = smtp.wait_for(before_mails + 2, timeout=NOTIFY_WAIT_S)[before_mails:]
    assert all("ended in error" in m.content and "state: Failed - " in m.content for m in mails if job_id in m.content)


@pytest.mark.parametrize("mode", ["down", "error", "hang"])
def test_a_broken_callback_receiver_neither_fails_nor_holds_the_job(jc: Env, mode: str) -> None:
    receiver = None if mode == "down" else HttpReceiver(mode)  # type: ignore[arg-type]
    url = receiver.url if receiver else f"http://127.0.0.1:{closed_port()}/tasks/1"
    try:
        job, took = jc.run_job("notif/v1/train", "--data", "data/points.csv", "--callback-url", url)
        assert job["state"] == "Completed", job
        # The job's log says what happened to its callback.
        logs = jc("jobs", "logs", job["id"]).stdout
        said = "gave up waiting" if mode == "hang" else "not delivered"
        assert f"callback {url}" in logs and said in logs, logs[-3000:]
        if receiver is not None:
            assert receiver.requests, "the receiver was never called"
        print(f"\ncallback receiver {mode}: `jobcloud run --local` took {took:.1f} s")
    finally:
        if receiver is not None:
            receiver.stop()


@pytest.mark.parametrize(
    "url, said",
    [("ftp://example.org/x", "only http:// and https://"), ("http://169.254.169.254/latest/meta-data", "link-local")],
)
def test_a_bad_callback_url_is_refused_before_anything_starts(jc: Env, url: str, said: str) -> None:
    proc = jc("run", "notif/v1/train", "--data", "data/points.csv", "--callback-url", url, "--local")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert said in proc.stderr and "Traceback" not in proc.stderr


def test_a_hanging_webhook_and_a_dead_smtp_server_leave_jobs_alone(jc: Env, webhook: HttpReceiver) -> None:
    hanging = HttpReceiver("hang")
    dead_smtp = closed_port()
    bad = {
        "JOBCLOUD_NOTIFY_WEBHOOK_URL": hanging.url,
        "JOBCLOUD_NOTIFY_EMAIL_TO": "lab@lab.example",
        "JOBCLOUD_SMTP_HOST": "127.0.0.1",
        "JOBCLOUD_SMTP_PORT": str(dead_smtp),
        "JOBCLOUD_SMTP_SECURITY": "none",
    }
    try:
        t = time.monotonic()
        proc = jc("deploy", **bad)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # A clear word at deploy time, within the probe's bound.
        assert f"warning  block jobcloud-notify-email  SMTP server 127.0.0.1:{dead_smtp}" in proc.stdout, proc.stdout
        # The blocks change in place; the automations, which name them by id, stay as they are.
        assert "updated  block jobcloud-notify-webhook" in proc.stdout, proc.stdout
        assert "unchanged  automation jobcloud-notify-finished" in proc.stdout, proc.stdout
        assert time.monotonic() - t < 60
        job, _ = jc.run_job("notif/v1/train", "--data", "data/points.csv")
        assert job["state"] == "Completed"
        hanging.wait_for(1, timeout=NOTIFY_WAIT_S)  # the server called it, and the job did not wait
    finally:
        hanging.stop()
        # Back to the module's working receivers for any later test.
        proc = jc("deploy", JOBCLOUD_NOTIFY_WEBHOOK_URL=f"http://127.0.0.1:{webhook.port}/hooks/jobcloud")
        assert proc.returncode == 0, proc.stderr


def test_no_settings_no_notification_automations(jc: Env) -> None:
    proc = jc("deploy")
    assert proc.returncode == 0, proc.stderr
    assert "deleted  automation jobcloud-notify-finished" in proc.stdout, proc.stdout
    bad = jc("deploy", JOBCLOUD_NOTIFY_WEBHOOK_URL="http://169.254.169.254/")
    assert bad.returncode == 2 and "JOBCLOUD_NOTIFY_WEBHOOK_URL" in bad.stderr

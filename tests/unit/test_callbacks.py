"""The job's callback (flows/callbacks.py), its events' shape (flows/job_events.py) and the
notification templates (deployments/notify/notifications.py): URL checks, and delivery against
real local HTTP servers that answer, are down, answer 500 and hang."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import yaml

from jobcloud.blocks.errors import ParameterError, UserError
from jobcloud.flows.callbacks import CallbackSender, check_callback_url, task_update
from jobcloud.flows.catalog import EntrypointRef, parse_catalog
from jobcloud.flows.job_events import JobReporter, data_out, related_resources
from jobcloud.flows.manifest import JobManifest, OutputRecord
from jobcloud.flows.request import JobRequest, flow_signature, request_from_parameters, validate_request
from tests.receivers import HttpReceiver, closed_port

CATALOG = parse_catalog(
    yaml.safe_dump(
        {"app": {"v1": {"train": {"app": {"cmd": ["true"]}, "handler": {"image_url": "x:1", "files_down": {"data_ids": "data"}}}}}}
    )
)
REF = EntrypointRef.parse("app/v1/train")
ENTRY = CATALOG.get(REF)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "example.org/no-scheme",
        "http:///no-host",
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.0.1:8080/",
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://2852039166/",  # 169.254.169.254 spelled as one number
        "http://0xA9FEA9FE/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://example.org:notaport/",
    ],
)
def test_bad_callback_urls_are_user_errors(url: str) -> None:
    with pytest.raises(ParameterError) as err:
        validate_request(ENTRY, JobRequest(callback_url=url))
    assert "callback_url" in str(err.value)
    assert isinstance(err.value, UserError)  # the CLI's exit 2, no traceback


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/tasks/1", "https://core.example.org/tasks/abc?token=t", "http://localhost/x"])
def test_good_callback_urls_pass(url: str) -> None:
    assert check_callback_url(url) == url
    assert validate_request(ENTRY, JobRequest(callback_url=f"  {url} ")).callback_url == url


def test_callback_url_is_a_form_field_and_a_parameter() -> None:
    sig = flow_signature(ENTRY)
    assert sig.parameters["callback_url"].default == ""
    # The form's empty box is no callback; a value passes through to the request.
    assert request_from_parameters(ENTRY, {"callback_url": ""}).callback_url is None
    assert request_from_parameters(ENTRY, {"callback_url": "http://h/x"}).callback_url == "http://h/x"


@pytest.fixture
def logs() -> list[tuple[str, str]]:
    return []


def _sender(url: str, logs: list[tuple[str, str]]) -> CallbackSender:
    return CallbackSender(url, lambda level, msg: logs.append((level, msg)))


@pytest.fixture
def receiver(request: pytest.FixtureRequest) -> Iterator[HttpReceiver]:
    r = HttpReceiver(mode=getattr(request, "param", "ok"))
    yield r
    r.stop()


def test_updates_arrive_in_order_as_patch_json(receiver: HttpReceiver, logs: list[tuple[str, str]]) -> None:
    sender = _sender(receiver.url, logs)
    for status in ("processing", "saving", "finished"):
        sender.send({"status": status})
    assert sender.close() is True
    got = receiver.wait_for(3)
    assert [r.method for r in got] == ["PATCH"] * 3
    assert [r.json()["status"] for r in got] == ["processing", "saving", "finished"]
    assert got[0].headers["content-type"] == "application/json"
    assert all(d.delivered and d.attempts == 1 for d in sender.deliveries)
    assert any("finished delivered" in m for _, m in logs)


@pytest.mark.parametrize("receiver", ["error"], indirect=True)
def test_a_500_is_retried_with_backoff_then_given_up(receiver: HttpReceiver, logs: list[tuple[str, str]]) -> None:
    sender = _sender(receiver.url, logs)
    t = time.monotonic()
    sender.send({"status": "finished"})
    assert sender.close(wait_s=10) is True
    took = time.monotonic() - t
    assert len(receiver.requests) == 4  # ATTEMPTS
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:])]
    assert gaps == sorted(gaps)  # backoff grows (0.05, 0.125, 0.25: close() quartered the pauses)
    assert took < 3
    [d] = sender.deliveries
    assert not d.delivered and d.error == "HTTP 500"
    assert any("not delivered after 4 tries (HTTP 500)" in m for lvl, m in logs if lvl == "warning")


def test_a_receiver_that_is_down_costs_little(logs: list[tuple[str, str]]) -> None:
    sender = _sender(f"http://127.0.0.1:{closed_port()}/t", logs)
    t = time.monotonic()
    sender.send({"status": "processing"})
    sender.send({"status": "finished"})
    assert sender.close() is True
    assert time.monotonic() - t < 3.5
    first, last = sender.deliveries
    # The older update gave way to the newer one; the newer was tried to the end.
    assert first.skipped and not first.delivered
    assert not last.delivered and last.attempts == 4 and "ConnectError" in (last.error or "")
    assert any("not delivered" in m for _, m in logs)


@pytest.mark.parametrize("receiver", ["hang"], indirect=True)
def test_a_receiver_that_hangs_holds_the_job_a_bounded_time(receiver: HttpReceiver, logs: list[tuple[str, str]]) -> None:
    sender = _sender(receiver.url, logs)
    sender.send({"status": "finished"})
    t = time.monotonic()
    assert sender.close(wait_s=1.5) is False
    assert time.monotonic() - t < 2.0
    assert any("gave up waiting after 1.5 s" in m for _, m in logs)


def test_task_update_has_the_swiss_ai_center_shape() -> None:
    body = task_update(
        "finished",
        job_id="j1",
        application="a",
        version="v1",
        entrypoint="e",
        phase="final",
        data_out=["jobs/j1/output/x.csv"],
        state="Completed",
    )
    assert body["status"] == "finished" and body["data_out"] == ["jobs/j1/output/x.csv"]
    assert {k: body[k] for k in ("job_id", "application", "version", "entrypoint", "phase", "state")} == {
        "job_id": "j1",
        "application": "a",
        "version": "v1",
        "entrypoint": "e",
        "phase": "final",
        "state": "Completed",
    }
    json.dumps(body)


def _manifest(state: str = "Completed") -> JobManifest:
    now = datetime.now(UTC)
    rec = {"size": 1, "sha256": "0" * 64}
    return JobManifest(
        job_id="11111111-2222-3333-4444-555555555555",
        application="app",
        version="v1",
        entrypoint="train",
        image="x:1",
        command=["true"],
        env_names=[],
        hardware={},
        state=state,
        message=None if state == "Completed" else "exit code 3\nmore",
        exit_code=0 if state == "Completed" else 3,
        outputs=[
            OutputRecord(kind="log", key="jobs/1111/log/container.log", **rec),
            OutputRecord(kind="artifact", key="jobs/1111/artifact/model.bin", **rec),
            OutputRecord(kind="output", key="jobs/1111/output/metrics.txt", **rec),
        ],
        started_at=now,
        finished_at=now,
    )


def test_data_out_lists_outputs_then_artifacts_then_logs() -> None:
    assert data_out(_manifest()) == ["jobs/1111/output/metrics.txt", "jobs/1111/artifact/model.bin", "jobs/1111/log/container.log"]


def test_related_resources_name_application_version_and_entrypoint() -> None:
    ids = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in related_resources(REF)}
    assert ids == {
        "application": "jobcloud.application.app",
        "version": "jobcloud.version.app/v1",
        "entrypoint": "jobcloud.entrypoint.app/v1/train",
    }


def test_reporter_sends_each_phase_and_the_final_update(
    receiver: HttpReceiver, logs: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobcloud.flows.job_events as job_events

    emitted: list[tuple[str, dict]] = []
    monkeypatch.setattr("prefect.events.emit_event", lambda **kw: emitted.append((kw["event"], kw)))

    class Logger:
        def __getattr__(self, level: str):
            return lambda msg: logs.append((level, msg))

    reporter = job_events.JobReporter(REF, "11111111-2222-3333-4444-555555555555", receiver.url, Logger())
    reporter.phase("inputs-staged", inputs=["data/x"])
    reporter.phase("container-started", started="abc")
    reporter.phase("container-exited", exit_code=3, timed_out=False)
    reporter.phase("outputs-uploaded", files=3)
    reporter.final(_manifest("Failed"))
    reporter.close()
    bodies = [r.json() for r in receiver.wait_for(5)]
    assert [b["status"] for b in bodies] == ["processing", "processing", "saving", "saving", "error"]
    assert [b["phase"] for b in bodies] == ["inputs-staged", "container-started", "container-exited", "outputs-uploaded", "final"]
    assert bodies[2]["details"] == {"exit_code": 3, "timed_out": False}
    assert bodies[-1]["state"] == "Failed" and bodies[-1]["data_out"][0] == "jobs/1111/output/metrics.txt"
    assert all(b["application"] == "app" and b["version"] == "v1" and b["entrypoint"] == "train" for b in bodies)
    names = [e for e, _ in emitted]
    assert names == [f"jobcloud.job.{p}" for p in ("inputs-staged", "container-started", "container-exited", "outputs-uploaded", "failed")]
    final = emitted[-1][1]
    assert final["resource"]["prefect.resource.id"] == "prefect.flow-run.11111111-2222-3333-4444-555555555555"
    assert final["payload"]["artifact"] == "jobs/11111111-2222-3333-4444-555555555555/artifact"
    assert final["payload"]["message"] == "exit code 3"


def test_reporter_without_callback_only_emits(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**kw):
        raise RuntimeError("no API")

    monkeypatch.setattr("prefect.events.emit_event", broken)
    reporter = JobReporter(REF, "j", None)
    reporter.phase("inputs-staged")  # an event that cannot be sent never breaks the job
    reporter.final(_manifest())
    reporter.close()
    assert reporter.sender is None and reporter.emitted == []


# The notification templates, rendered as the Prefect server renders them.


class _State:
    def __init__(self, name: str, message: str | None) -> None:
        self.name, self.message = name, message


class _Run:
    id = "11111111-2222-3333-4444-555555555555"
    name = 'app/v1/train 11111111 "quoted"'
    tags = ["jobcloud", "app:app", "version:v1", "entrypoint:train"]

    def __init__(self, state: str, message: str | None) -> None:
        self.state = _State(state, message)


def _render(template: str, run: _Run) -> str:
    from prefect.server.utilities.user_templates import register_user_template_filters, render_user_template

    register_user_template_filters({"ui_url": lambda obj: f"http://ui/runs/flow-run/{obj.id}"})
    return asyncio.run(render_user_template(template, {"flow_run": run}))


def test_notification_texts_name_job_app_version_entrypoint_state_and_outputs() -> None:
    from jobcloud.deployments.notify.notifications import json_body, text_body

    run = _Run("Failed", 'exit code 3 | "quote" {{not a template}}')
    text = _render(text_body("error", "s3://bucket/{{x}}"), run)
    assert "JobCloud job 11111111-2222-3333-4444-555555555555 ended in error." in text
    for line in (
        "application: app",
        "version: v1",
        "entrypoint: train",
        "state: Failed - exit code 3",
        "outputs: jobs/11111111-2222-3333-4444-555555555555/ in the job store s3://bucket/{{x}}",
    ):
        assert line in text, text
    doc = json.loads(_render(json_body("error", "s3://bucket/{{x}}"), run))
    assert doc["application"] == "app" and doc["version"] == "v1" and doc["entrypoint"] == "train"
    assert doc["state"] == "Failed" and doc["message"].startswith('exit code 3 | "quote"')
    assert doc["outputs"] == "jobs/11111111-2222-3333-4444-555555555555/" and doc["store"] == "s3://bucket/{{x}}"
    assert doc["event"] == "jobcloud.job.error" and doc["name"] == _Run.name
    assert "application: app" in doc["text"]
    ok = json.loads(_render(json_body("finished", "/store"), _Run("Completed", None)))
    assert ok["message"] is None and ok["state"] == "Completed"


def test_notify_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobcloud.deployments.notify.notifications import kinds, notify_settings, recipients

    monkeypatch.setenv("JOBCLOUD_NOTIFY_WEBHOOK_URL", "http://169.254.169.254/")
    with pytest.raises(UserError, match="JOBCLOUD_NOTIFY_WEBHOOK_URL"):
        notify_settings()
    monkeypatch.setenv("JOBCLOUD_NOTIFY_WEBHOOK_URL", "https://hooks.example.org/x")
    monkeypatch.setenv("JOBCLOUD_NOTIFY_EMAIL_TO", "a@lab.example")
    with pytest.raises(UserError, match="JOBCLOUD_SMTP_HOST"):
        notify_settings()
    monkeypatch.setenv("JOBCLOUD_SMTP_HOST", "smtp.lab.example")
    monkeypatch.setenv("JOBCLOUD_NOTIFY_ON", "finished,sometimes")
    with pytest.raises(UserError, match="sometimes"):
        notify_settings()
    monkeypatch.setenv("JOBCLOUD_NOTIFY_ON", "error")
    monkeypatch.setenv("JOBCLOUD_SMTP_PORT", "nope")
    with pytest.raises(UserError, match="JOBCLOUD_SMTP_PORT"):
        notify_settings()
    monkeypatch.setenv("JOBCLOUD_SMTP_PORT", "2525")
    s = notify_settings()
    assert kinds(s) == ["error"] and recipients(s) == ["a@lab.example"]


def test_email_block_makes_an_apprise_url_that_keeps_the_password_secret() -> None:
    from jobcloud.deployments.notify.email_block import JobCloudEmail

    block = JobCloudEmail(
        smtp_host="smtp.lab.example",
        smtp_port=2525,
        security="starttls",
        username="u@x",
        password="p:w/d",
        from_address="jc@lab.example",
        to=["a@lab.example", "b@lab.example"],
    )
    url = block.apprise_url().get_secret_value()
    assert url.startswith("mailtos://u%40x:p%3Aw%2Fd@smtp.lab.example:2525/?")
    assert "mode=starttls" in url and "to=a%40lab.example%2Cb%40lab.example" in url
    assert "p:w/d" not in repr(block)

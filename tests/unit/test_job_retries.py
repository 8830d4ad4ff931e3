"""Which failures a job retries and how long it waits; masking of secret values in output."""

from __future__ import annotations

import pytest
from prefect.states import Failed

from jobcloud.blocks.errors import ContainerEngineError, ImageNotFoundError, ParameterError, StorageError
from jobcloud.flows.retries import RetryPolicy, is_infra_failure
from jobcloud.flows.secrets import masker


def _app_failure(code: int = 1, timed_out: bool = False):
    return Failed(message="x", data={"exit_code": code, "timed_out": timed_out})


def test_infrastructure_failures_back_off_exponentially(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBCLOUD_INFRA_ATTEMPTS", raising=False)
    monkeypatch.delenv("JOBCLOUD_INFRA_RETRY_DELAY_S", raising=False)
    policy = RetryPolicy()
    options = policy.task_options()
    assert options["retries"] == 2 and options["retry_delay_seconds"] == [2.0, 4.0]  # Prefect's own parameters
    engine_down = Failed(data=ContainerEngineError("the engine does not answer"))
    assert [policy.next_delay(engine_down) for _ in range(3)] == [2.0, 4.0, None]
    assert policy.attempts == 3


def test_app_failures_are_retried_only_where_the_catalog_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_INFRA_ATTEMPTS", "2")
    assert RetryPolicy().next_delay(_app_failure()) is None
    policy = RetryPolicy(app_retries=1, app_delay_s=0.5)
    assert policy.max_attempts == 3
    assert policy.task_options()["retry_delay_seconds"] == [0.5, 0.5]  # the catalog's delay, every retry
    assert policy.next_delay(_app_failure()) == 0.5
    assert policy.next_delay(_app_failure()) is None  # its one retry is spent
    # An infrastructure failure still has its own budget (and waits the task's one delay).
    assert policy.next_delay(Failed(data=StorageError("store down"))) == 0.5
    assert policy.next_delay(Failed(data=StorageError("store down"))) is None
    assert policy.attempts == 3


def test_the_retry_condition_only_decides_and_never_touches_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's public retry parameters carry the delays; the condition changes nothing on the
    task (it used to set `task.retry_delay_seconds` from inside, behind Prefect's back)."""
    from types import SimpleNamespace

    monkeypatch.delenv("JOBCLOUD_INFRA_ATTEMPTS", raising=False)
    monkeypatch.delenv("JOBCLOUD_INFRA_RETRY_DELAY_S", raising=False)
    options = RetryPolicy().task_options()
    task = SimpleNamespace(retry_delay_seconds=options["retry_delay_seconds"])
    condition = options["retry_condition_fn"]
    assert condition(task, None, Failed(data=ContainerEngineError("down"))) is True
    assert task.retry_delay_seconds == [2.0, 4.0]
    assert condition(task, None, Failed(data=ParameterError("bad"))) is False
    # Prefect takes them as they are: a task made with these options has the same retries.
    from prefect import task as prefect_task

    made = prefect_task(lambda: None).with_options(**options)
    assert (made.retries, made.retry_delay_seconds, made.retry_condition_fn) == (2, [2.0, 4.0], condition)
    assert RetryPolicy(app_retries=1).task_options()["retry_delay_seconds"] == 0  # no delay: retried at once


def test_timeouts_and_user_errors_are_never_retried() -> None:
    policy = RetryPolicy(app_retries=5)
    assert policy.next_delay(_app_failure(137, timed_out=True)) is None
    assert policy.next_delay(Failed(data=ParameterError("bad"))) is None
    assert policy.attempts == 1


def test_image_pull_failures_are_retried_only_when_transient() -> None:
    from docker.errors import APIError, NotFound

    def raised(cause: Exception) -> ImageNotFoundError:
        try:
            try:
                raise cause
            except Exception:
                raise ImageNotFoundError("img", "pull failed") from None
        except ImageNotFoundError as exc:
            return exc

    class _Resp:
        def __init__(self, code: int) -> None:
            self.status_code = code
            self.reason = "x"

    assert is_infra_failure(raised(APIError("registry down", response=_Resp(502))))
    assert not is_infra_failure(raised(NotFound("no such image", response=_Resp(404))))
    assert not is_infra_failure(raised(APIError("denied", response=_Resp(403))))


def test_bad_retry_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobcloud.blocks.errors import JobCloudError

    monkeypatch.setenv("JOBCLOUD_INFRA_ATTEMPTS", "0")
    with pytest.raises(JobCloudError, match="JOBCLOUD_INFRA_ATTEMPTS"):
        RetryPolicy()


def test_masker_hides_every_secret_value() -> None:
    mask = masker(["s3cr3t-value", "line one\nline two", ""])
    assert mask("token=s3cr3t-value!") == "token=***!"
    assert mask("got line two here") == "got *** here"
    assert mask("nothing secret") == "nothing secret"


def test_an_engine_that_does_not_answer_is_retried_inside_a_job() -> None:
    from jobcloud.blocks.errors import EngineUnavailableError, GpuUnavailableError

    assert is_infra_failure(EngineUnavailableError("no container engine answers"))
    assert not is_infra_failure(GpuUnavailableError(1, "podman", "no GPU"))

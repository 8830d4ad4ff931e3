"""A submission the Prefect server refuses for load is asked again with jittered waits until
JOBCLOUD_SUBMIT_PATIENCE_S is spent, under one idempotency key; then one `SubmitRefusedError`
(deployments/jobs/landing.py, deployments/jobs/submit.py). Fakes only: no server, no sleep."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from jobcloud.blocks.errors import JobCloudError, UserError
from jobcloud.blocks.settings import SettingsError, get_settings
from jobcloud.deployments.jobs import landing
from jobcloud.deployments.jobs.landing import SubmitRefusedError, delays, land, load_refusal
from jobcloud.deployments.jobs.submit import DeploymentMissingError, submit
from jobcloud.flows.catalog import EntrypointRef
from jobcloud.flows.request import JobRequest

API = "http://prefect.example:4200/api"


def status_error(code: int, path: str = "/deployments/x/create_flow_run") -> PrefectHTTPStatusError:
    request = httpx.Request("POST", API + path)
    return PrefectHTTPStatusError.from_httpx_error(
        httpx.HTTPStatusError(f"{code}", request=request, response=httpx.Response(code, request=request))
    )


class Clock:
    """A fake monotonic clock that `sleep` moves on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(errors: list[BaseException], result: object = "run") -> Any:
    """An attempt that raises ``errors`` one per call, then returns ``result``."""
    calls: list[int] = []

    def attempt() -> object:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    attempt.calls = calls  # type: ignore[attr-defined]
    return attempt


@pytest.mark.parametrize("code", [408, 429, 502, 503, 504])
def test_load_statuses_are_retried(code: int) -> None:
    assert load_refusal(status_error(code)) is not None


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 422, 500])
def test_other_statuses_are_not(code: int) -> None:
    assert load_refusal(status_error(code)) is None


def test_a_lost_answer_may_have_landed_a_refused_connection_not() -> None:
    request = httpx.Request("POST", API)
    assert load_refusal(httpx.ReadTimeout("slow", request=request)) == ("ReadTimeout: slow", True)
    assert load_refusal(httpx.RemoteProtocolError("closed", request=request))[1] is True  # type: ignore[index]
    assert load_refusal(httpx.ConnectError("refused", request=request))[1] is False  # type: ignore[index]
    assert load_refusal(httpx.PoolTimeout("pool", request=request))[1] is False  # type: ignore[index]
    assert load_refusal(ValueError("ours")) is None


def test_delays_double_up_to_a_cap_and_are_random_below_it() -> None:
    top = delays(lambda: 1.0)
    assert [top(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert delays(lambda: 0.0)(5) == 0.0
    assert delays(lambda: 0.5)(3) == 1.0


def test_refusals_are_retried_until_the_run_lands() -> None:
    clock = Clock()
    attempt = failing([status_error(503), status_error(429), httpx.ReadError("reset")])
    got = land(attempt, API, 60, sleep=clock.sleep, clock=clock, rng=lambda: 1.0)
    assert got == "run"
    assert len(attempt.calls) == 4
    assert clock.slept == [0.5, 1.0, 2.0]


def test_the_waits_are_jittered() -> None:
    clock = Clock()
    shares = iter([0.1, 0.9, 0.3])
    land(failing([status_error(503)] * 3), API, 60, sleep=clock.sleep, clock=clock, rng=lambda: next(shares))
    assert clock.slept == pytest.approx([0.05, 0.9, 0.6])


def test_other_errors_propagate_at_once() -> None:
    clock = Clock()
    for exc in (status_error(404), status_error(500), ValueError("bug"), DeploymentMissingError("no deployment")):
        attempt = failing([exc])
        with pytest.raises(type(exc)):
            land(attempt, API, 60, sleep=clock.sleep, clock=clock)
        assert len(attempt.calls) == 1
    assert clock.slept == []


def test_it_gives_up_when_the_patience_is_spent() -> None:
    clock = Clock()
    attempt = failing([status_error(503)] * 100)
    with pytest.raises(SubmitRefusedError) as info:
        land(attempt, API, 20, sleep=clock.sleep, clock=clock, rng=lambda: 1.0)
    exc = info.value
    # 0.5 + 1 + 2 + 4 + 8 = 15.5 s slept; the next wait (15 s) would end past 20 s.
    assert sum(clock.slept) == 15.5 and exc.attempts == len(attempt.calls) == 6
    message = str(exc)
    assert "\n" not in message
    assert API in message and "JOBCLOUD_SUBMIT_PATIENCE_S" in message and "(now 20 s)" in message
    assert "503 Service Unavailable" in message and "6 times" in message
    assert "may still have created it" not in message  # every answer came: nothing was made
    assert isinstance(exc, JobCloudError) and not isinstance(exc, UserError)  # the CLI: exit 1


def test_giving_up_after_a_lost_answer_says_the_run_may_exist() -> None:
    clock = Clock()
    errors: list[BaseException] = [httpx.ReadTimeout("slow"), *[status_error(503)] * 50]
    with pytest.raises(SubmitRefusedError, match="may still have created it"):
        land(failing(errors), API, 5, sleep=clock.sleep, clock=clock, rng=lambda: 1.0)


def test_no_patience_means_one_try() -> None:
    clock = Clock()
    attempt = failing([status_error(503)])
    with pytest.raises(SubmitRefusedError, match="refused the job 1 time in"):
        land(attempt, API, 0, sleep=clock.sleep, clock=clock, rng=lambda: 0.5)
    assert len(attempt.calls) == 1 and clock.slept == []


def test_the_patience_setting() -> None:
    assert get_settings().submit_patience_s == 600


def test_a_bad_patience_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_SUBMIT_PATIENCE_S", "soon")
    with pytest.raises(SettingsError, match="JOBCLOUD_SUBMIT_PATIENCE_S"):
        get_settings()
    monkeypatch.setenv("JOBCLOUD_SUBMIT_PATIENCE_S", "7200")
    with pytest.raises(SettingsError, match="between 0 and 3600"):
        get_settings()


class BusyClient:
    """A Prefect client whose server refuses ``refusals`` creates (503), then makes the run;
    a create with a key it has seen returns that run, as Prefect's server does."""

    api_url = httpx.URL(API + "/")

    def __init__(self, refusals: int, lost_answers: int = 0) -> None:
        self.refusals = refusals
        self.lost_answers = lost_answers
        self.creates: list[dict[str, Any]] = []
        self.runs: dict[str, SimpleNamespace] = {}

    def read_deployment_by_name(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(id="dep-1", work_pool_name="cpu", job_variables={})

    def create_flow_run_from_deployment(self, deployment_id: str, **kwargs: Any) -> SimpleNamespace:
        self.creates.append(kwargs)
        if self.refusals:
            self.refusals -= 1
            raise status_error(503)
        key = kwargs["idempotency_key"]
        run = self.runs.setdefault(key, SimpleNamespace(id=f"run-{len(self.runs) + 1}", tags=kwargs["tags"]))
        if self.lost_answers:  # made, but the answer never came back
            self.lost_answers -= 1
            raise httpx.ReadTimeout("timed out")
        return run


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(landing, "FIRST_DELAY_S", 0.001)
    monkeypatch.setattr(landing, "MAX_DELAY_S", 0.002)


REF = EntrypointRef.parse("linefit/v1/train")


def test_submit_retries_under_one_idempotency_key(quick: None) -> None:
    client = BusyClient(refusals=3)
    run = submit(client, REF, JobRequest(), extra_tags=["user:alice"])
    assert run.id == "run-1" and len(client.creates) == 4
    keys = {c["idempotency_key"] for c in client.creates}
    assert len(keys) == 1 and next(iter(keys))
    assert "user:alice" in run.tags and "app:linefit" in run.tags
    second = submit(client, REF, JobRequest())
    assert second.id == "run-2"  # a new submission, a new key
    assert len({c["idempotency_key"] for c in client.creates}) == 2


def test_a_create_that_landed_unanswered_is_not_made_twice(quick: None) -> None:
    client = BusyClient(refusals=0, lost_answers=2)
    run = submit(client, REF, JobRequest())
    assert run.id == "run-1" and len(client.creates) == 3 and len(client.runs) == 1


def test_submit_gives_up_naming_the_server(quick: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_SUBMIT_PATIENCE_S", "0.05")
    client = BusyClient(refusals=10**6)
    with pytest.raises(SubmitRefusedError, match=f"the Prefect server at {API} is too busy"):
        submit(client, REF, JobRequest())
    assert len(client.creates) > 1 and not client.runs


def test_a_missing_deployment_is_not_retried(quick: None) -> None:
    class NoDeployment(BusyClient):
        def read_deployment_by_name(self, name: str) -> SimpleNamespace:
            self.creates.append({})
            raise ObjectNotFound(http_exc=Exception(name))

    client = NoDeployment(refusals=0)
    with pytest.raises(DeploymentMissingError):
        submit(client, REF, JobRequest())
    assert len(client.creates) == 1

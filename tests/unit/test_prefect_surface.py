"""The few Prefect names JobCloud uses that are not Prefect's documented public API, each
checked by importing it and reading its signature: a Prefect upgrade that renames or reshapes
one fails here, not in a job. Each use carries a comment saying why no public name serves."""

from __future__ import annotations

import inspect


def test_the_worker_label_hook_the_fast_worker_overrides() -> None:
    # deployments/worker/fast_worker.py: a failed label write must not crash the run.
    from prefect.workers.process import ProcessWorker

    hook = ProcessWorker._give_worker_labels_to_flow_run
    assert inspect.iscoroutinefunction(hook)
    assert list(inspect.signature(hook).parameters) == ["self", "flow_run_id"]


def test_the_settings_refresh_of_a_forked_run() -> None:
    # deployments/worker/warm_start.py: a forked child reads settings from its run's environment.
    from prefect.context import refresh_global_settings_context

    assert callable(refresh_global_settings_context)
    assert all(p.default is not p.empty for p in inspect.signature(refresh_global_settings_context).parameters.values())


def test_the_process_utilities_of_the_worker_command() -> None:
    # deployments/worker/fast_worker.py: the worker's command, as Prefect's process worker builds it.
    from prefect.utilities.processutils import command_to_string, get_sys_executable

    assert isinstance(get_sys_executable(), str)
    assert command_to_string(["python", "-m", "a b"]) == "python -m 'a b'"


def test_the_parameter_schema_deploy_compares() -> None:
    # deployments/deploy/sync.py: the schema Prefect gives a flow's deployment.
    from prefect import flow
    from prefect.utilities.callables import parameter_schema

    @flow
    def f(x: int, y: str = "a") -> None:
        return None

    schema = parameter_schema(f).model_dump(mode="json", exclude_unset=True)
    assert schema["required"] == ["x"] and set(schema["properties"]) == {"x", "y"}


def test_a_failed_states_exception_data_is_what_prefect_raises() -> None:
    # flows/job.py (end_state): a worker asks for a failed run's result and logs what it raises.
    from prefect.states import Failed, get_state_exception

    from jobcloud.flows.manifest import JobEnded

    ended = JobEnded("m", {"job_id": "j"})
    assert get_state_exception(Failed(message="m", data=ended)) is ended


def test_the_public_retry_parameters_the_job_tasks_take() -> None:
    # flows/retries.py: retries, a delay list (exponential_backoff) and a retry condition.
    from prefect import task
    from prefect.tasks import exponential_backoff

    assert exponential_backoff(2.0)(3) == [2.0, 4.0, 8.0]
    options = inspect.signature(task(lambda: None).with_options).parameters
    assert {"retries", "retry_delay_seconds", "retry_condition_fn"} <= set(options)

"""Retries of a job's tasks, through Prefect's own task retries: how many, after which
failures, how long between them, and the clean slate each new attempt of the app gets."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from prefect.states import State
from prefect.tasks import exponential_backoff

from jobcloud.blocks.errors import ContainerEngineError, EngineUnavailableError, ImageNotFoundError, JobCloudError, StorageError, UserError
from jobcloud.blocks.settings import get_settings
from jobcloud.flows.catalog import Entrypoint

# Infrastructure failures of the container run (engine unreachable, a transient pull) are retried
# whatever the catalog says: JOBCLOUD_INFRA_ATTEMPTS attempts in all, waiting
# JOBCLOUD_INFRA_RETRY_DELAY_S, then twice that, and so on (jobcloud.blocks.settings). File
# transfers are not retried here: the job store's one retry layer owns them (docs/job-stores.md).


def is_infra_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the machinery around the app, worth another attempt."""
    from docker.errors import APIError, NotFound
    from requests.exceptions import ConnectionError as RequestsConnectionError
    from requests.exceptions import Timeout

    if isinstance(exc, ImageNotFoundError):
        # A pull that failed on the registry's or engine's side (5xx, connection) may work next
        # time; an image the registry does not have will not. ensure_image chains the cause.
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, NotFound):
            return False
        return isinstance(cause, (RequestsConnectionError, Timeout)) or (isinstance(cause, APIError) and cause.is_server_error())
    if isinstance(exc, EngineUnavailableError):
        # A UserError for `jobcloud run` (exit 2 before anything starts); inside a running job
        # on a worker, an engine that does not answer now may answer in a few seconds.
        return True
    if isinstance(exc, UserError):
        return False
    if isinstance(exc, (ContainerEngineError, StorageError, RequestsConnectionError, Timeout)):
        return True
    return isinstance(exc, APIError) and exc.is_server_error()


class RetryPolicy:
    """When a task runs again, through Prefect's own task retries (its public parameters:
    `retries`, `retry_delay_seconds`, `retry_condition_fn`).

    Infrastructure failures get ``infra_attempts`` attempts; an app's non-zero exit (a Failed
    state the run-container task returns) gets ``app_retries`` more attempts; a timeout or a
    user error is never retried. `condition` keeps a budget per kind. Prefect takes one delay
    list per task, indexed by the retry's number, not by what failed, so: a task without app
    retries (stage-inputs, upload-outputs, a run-container whose entrypoint asks for none)
    backs off exponentially, ``infra_delay_s`` then twice that and so on; a run-container whose
    entrypoint asks for app retries waits ``app_delay_s`` (the catalog's `retry_delay_s`)
    before every retry, whichever kind failed.
    """

    def __init__(self, app_retries: int = 0, app_delay_s: float = 0.0) -> None:
        settings = get_settings()  # a bad value is a SettingsError that names the variable
        self.infra_attempts = settings.infra_attempts
        self.infra_delay_s = settings.infra_retry_delay_s
        self.app_retries = app_retries
        self.app_delay_s = app_delay_s
        self.infra_retried = 0
        self.app_retried = 0
        self.attempts = 1

    @property
    def max_attempts(self) -> int:
        return self.infra_attempts + self.app_retries

    def delays(self) -> list[float]:
        """Seconds before each retry, by its number: Prefect's `retry_delay_seconds`."""
        retries = self.max_attempts - 1
        if self.app_retries:
            return [self.app_delay_s] * retries
        return exponential_backoff(self.infra_delay_s)(retries)

    def allows_retry(self, state: State) -> bool:
        """Whether failed ``state`` gets another attempt (and, if so, spend one of its kind's)."""
        data = state.data
        if isinstance(data, BaseException):
            if not is_infra_failure(data) or self.infra_retried >= self.infra_attempts - 1:
                return False
            self.infra_retried += 1
        elif isinstance(data, dict) and not data.get("timed_out") and data.get("exit_code") not in (0, None):
            if self.app_retried >= self.app_retries:
                return False
            self.app_retried += 1
        else:
            return False
        self.attempts += 1
        return True

    def next_delay(self, state: State) -> float | None:
        """Seconds before the next attempt after failed ``state``, or None for no retry."""
        if not self.allows_retry(state):
            return None
        delays = self.delays()
        return delays[min(self.attempts - 2, len(delays) - 1)]

    def task_options(self) -> dict[str, Any]:
        """Options for `Task.with_options`: Prefect retries, decided by this policy."""

        def condition(task: Any, task_run: Any, state: State) -> bool:
            return self.allows_retry(state)

        delays = self.delays()
        # A plain function: Prefect ignores a retry_condition_fn that is a bound method. No
        # delay at all is 0, not a list of zeros: Prefect then retries at once (Retrying rather
        # than an AwaitingRetry due now).
        return {"retries": self.max_attempts - 1, "retry_delay_seconds": delays if any(delays) else 0, "retry_condition_fn": condition}


def empty_folders(files_dir: Path, folders: list[str]) -> None:
    """Empty the files_up folders so that a retry's outputs are only its own."""
    for folder in folders:
        root = files_dir / folder
        if root.is_symlink() or not root.is_dir():
            continue
        try:
            for child in root.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        except OSError as exc:
            raise JobCloudError(f"cannot empty /files/{folder} before the next attempt: {exc}") from None


def folders_to_empty(entry: Entrypoint) -> list[str]:
    """files_up folders, except any that holds or sits in an input folder (inputs stay)."""
    down = [f for f in vars(entry.handler.files_down).values() if f]
    up = [f for f in vars(entry.handler.files_up).values() if f]

    def overlaps(a: str, b: str) -> bool:
        return a == b or a.startswith(b + "/") or b.startswith(a + "/")

    return sorted({u for u in up if not any(overlaps(u, d) for d in down)})

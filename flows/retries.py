"""Retries of a job's tasks, through Prefect's own task retries: how many, after which
failures, how long between them, and the clean slate each new attempt of the app gets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from prefect.states import State

from jobcloud.blocks.errors import ContainerEngineError, EngineUnavailableError, ImageNotFoundError, JobCloudError, StorageError, UserError
from jobcloud.flows.catalog import Entrypoint

# Infrastructure failures (engine unreachable, a transient pull or storage failure) are retried
# whatever the catalog says: JOBCLOUD_INFRA_ATTEMPTS attempts in all, waiting
# JOBCLOUD_INFRA_RETRY_DELAY_S, then twice that, and so on.
INFRA_ATTEMPTS = 3
INFRA_DELAY_S = 2.0


def _env_number(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise JobCloudError(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise JobCloudError(f"{name}={raw!r} must be between {low:g} and {high:g}")
    return value


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
    """When a task runs again, through Prefect's own task retries.

    Infrastructure failures get ``infra_attempts`` attempts with exponential backoff; an app's
    non-zero exit (a Failed state the run-container task returns) gets ``app_retries`` more
    attempts ``app_delay_s`` apart; a timeout or a user error is never retried. Prefect takes
    one retry count and one delay list per task, so `condition` keeps a budget per kind and sets
    the delay of the retry it allows.
    """

    def __init__(self, app_retries: int = 0, app_delay_s: float = 0.0) -> None:
        self.infra_attempts = int(_env_number("JOBCLOUD_INFRA_ATTEMPTS", INFRA_ATTEMPTS, 1, 10))
        self.infra_delay_s = _env_number("JOBCLOUD_INFRA_RETRY_DELAY_S", INFRA_DELAY_S, 0, 600)
        self.app_retries = app_retries
        self.app_delay_s = app_delay_s
        self.infra_retried = 0
        self.app_retried = 0
        self.attempts = 1

    @property
    def max_attempts(self) -> int:
        return self.infra_attempts + self.app_retries

    def next_delay(self, state: State) -> float | None:
        """Seconds before the next attempt after failed ``state``, or None for no retry."""
        data = state.data
        if isinstance(data, BaseException):
            if not is_infra_failure(data) or self.infra_retried >= self.infra_attempts - 1:
                return None
            delay = self.infra_delay_s * 2**self.infra_retried
            self.infra_retried += 1
        elif isinstance(data, dict) and not data.get("timed_out") and data.get("exit_code") not in (0, None):
            if self.app_retried >= self.app_retries:
                return None
            delay = self.app_delay_s
            self.app_retried += 1
        else:
            return None
        self.attempts += 1
        return delay

    def task_options(self) -> dict[str, Any]:
        """Options for `Task.with_options`: Prefect retries, decided by this policy."""

        def condition(task: Any, task_run: Any, state: State) -> bool:
            delay = self.next_delay(state)
            if delay is None:
                return False
            # Prefect reads the task's retry delay right after this check passes (task_engine's
            # handle_retry), so the retry waits in AwaitingRetry for the delay of its own kind.
            task.retry_delay_seconds = delay
            return True

        # A plain function: Prefect ignores a retry_condition_fn that is a bound method.
        return {"retries": self.max_attempts - 1, "retry_delay_seconds": 0, "retry_condition_fn": condition}


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

"""What every route shares: the job store, the catalog, one Prefect client, ownership checks.

Everything a job is (validate, submit, show, logs, cancel) is `jobcloud.deployments.jobs`'s; this module
only maps a caller onto it: their files live under `users/<name>/`, their jobs carry the tag
`user:<name>`.
"""

from __future__ import annotations

import threading
from typing import Any

from pydantic import BaseModel

from jobcloud.blocks.keys import check_key
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.deployments.http_api.auth import Principal
from jobcloud.deployments.http_api.errors import ApiError
from jobcloud.deployments.jobs.show import UnknownJobError, describe_run, read_run

USERS_PREFIX = "users"
FINAL_TYPES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def user_root(user: str) -> str:
    """The job-store prefix of a user's own files."""
    return f"{USERS_PREFIX}/{user}"


def user_key(user: str, key: str, field: str = "key") -> str:
    """``key`` (relative to the user's folder) as a job-store key; `UnsafeKeyError` for '..' etc."""
    from jobcloud.blocks.errors import UnsafeKeyError

    try:
        return f"{user_root(user)}/{check_key(key)}"
    except UnsafeKeyError as exc:
        raise ApiError(400, str(exc), field, "give a relative path like data/exp1 (no '..', no leading '/')") from None


def json_body(model: BaseModel) -> bytes:
    """The body FastAPI sends for a route that returns ``model`` as its response model (it
    serializes with pydantic's `dump_json`, by alias)."""
    return model.model_dump_json(by_alias=True).encode()


def owner_tag(user: str) -> str:
    return f"user:{user}"


def owner_of(run: Any) -> str | None:
    return next((t[5:] for t in run.tags if t.startswith("user:")), None)


class Backend:
    """The store and a Prefect client, opened on first use and shared by every request (the
    sync client's httpx pool is thread-safe; FastAPI runs sync routes on a thread pool)."""

    def __init__(self, store: JobStore | None = None) -> None:
        self._store = store
        self._client: Any = None
        self._lock = threading.Lock()
        # Count-then-submit of the active-jobs bound; create_app makes it a lock shared by
        # every API process (limits.SubmitLock).
        self.submit_lock: Any = threading.Lock()

    @property
    def store(self) -> JobStore:
        if self._store is None:
            from jobcloud.blocks.store.factory import store_from_settings

            self._store = store_from_settings()
        return self._store

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from jobcloud.deployments.jobs.submit import connect_api

                api = connect_api()
                from prefect.client.orchestration import get_client
                from prefect.settings import PREFECT_API_URL, temporary_settings

                # Named explicitly: Prefect's settings are read when prefect is first imported,
                # which may be before PREFECT_API_URL was set in this process.
                with temporary_settings(updates={PREFECT_API_URL: api}):
                    client = get_client(sync_client=True)
                client.__enter__()
                self._client = client
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.__exit__(None, None, None)
            self._client = None

    def owned_run(self, who: Principal, job_id: str) -> Any:
        """The flow run of ``job_id`` if the caller may see it; 404 otherwise (also for
        another user's job: its existence is not revealed)."""
        try:
            run = read_run(self.client, job_id)
        except UnknownJobError:
            raise ApiError(404, f"no job {job_id}", "job_id", "list yours with GET /jobs") from None
        if not who.is_admin and owner_of(run) != who.user:
            raise ApiError(404, f"no job {job_id}", "job_id", "list yours with GET /jobs")
        return run

    def job_answer(self, job_id: str) -> tuple[bytes, str | None, bool]:
        """GET /jobs/{id}'s answer (the JSON body of its `JobInfo`), the job's owner, and
        whether it has ended: one read of the run (two while it runs: its phase), one of the
        manifest. `UnknownJobError` for an unknown id."""
        run = read_run(self.client, job_id)
        info = describe_run(self.client, run, self.store)
        final = run.state is not None and run.state.is_final()
        return json_body(info), owner_of(run), final

    def active_jobs(self, user: str) -> int:
        """Jobs of ``user`` not yet in a final state."""
        from prefect.client.schemas.filters import (
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
            FlowRunFilterTags,
        )
        from prefect.client.schemas.objects import StateType

        live = [t for t in StateType if t.value not in FINAL_TYPES]
        flt = FlowRunFilter(
            tags=FlowRunFilterTags(all_=[owner_tag(user)]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=live)),
        )
        return int(self.client.count_flow_runs(flow_run_filter=flt))

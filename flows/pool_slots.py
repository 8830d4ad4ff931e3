"""A job holds one slot of its pool's limit while its command runs.

`jobcloud deploy --limit cpu=8` sets the pool's own limit and a Prefect global concurrency
limit `jobcloud-pool-cpu` of the same size (`jobcloud.deployments.pools.work_pools.sync_pool_slots`). Prefect
checks a pool's limit only when a worker asks for work, so several busy workers can start a few
runs past it; the global limit's slots are leased on the server, so no more than the limit's
commands of a pool ever run at once. A pool without a limit has no such global limit: the job
reads the limit first and asks for no slot of one that does not exist (Prefect would log a
warning in every job's log that it skips the acquisition).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jobcloud.blocks.settings import env_name, get_settings
from jobcloud.flows.cancel_watch import raise_if_cancelled
from jobcloud.flows.slot_lease import SlotLease

POOL_ENV = env_name("pool")  # set by the pool's job template


def pool_slots_name(pool: str) -> str:
    """The global concurrency limit of ``pool`` (`jobcloud-pool-cpu`)."""
    return f"jobcloud-pool-{pool}"


def limit_exists(name: str, client: Any = None) -> bool:
    """Whether the global concurrency limit ``name`` exists (``client``: a sync Prefect client;
    by default one for the configured API)."""
    from prefect.exceptions import ObjectNotFound

    if client is None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as own:
            return limit_exists(name, own)
    try:
        client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        return False
    return True


# An array's elements each take a slot: whether the pool has a limit is asked once per this
# many seconds per process, not once per element (`jobcloud deploy --limit` changes it rarely).
SEEN_FOR_S = 10.0


def logger() -> Any:
    """The run's logger inside a run, else this module's."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        import logging

        return logging.getLogger(__name__)


_seen: dict[str, tuple[float, bool]] = {}


def _limit_seen(name: str, client: Any) -> bool:
    if client is not None:  # a caller's own client (tests, another server): ask it
        return limit_exists(name, client)
    now = time.monotonic()
    last = _seen.get(name)
    if last is not None and now - last[0] < SEEN_FOR_S:
        return last[1]
    exists = limit_exists(name, client)
    _seen[name] = (now, exists)
    return exists


@contextmanager
def pool_slot(client: Any = None) -> Iterator[None]:
    """Hold one slot of this run's pool: none outside a pool (`run --local`), none in a pool
    deployed without `--limit` (it has no global limit). The slot is a lease (`SlotLease`): a
    host that dies or is cut off stops renewing it and the server frees it a minute later; a
    server restart, which forgets leases, does not leak it."""
    pool = get_settings().pool
    if not pool or not _limit_seen(pool_slots_name(pool), client):
        yield
        return
    if client is None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as own, pool_slot(own):
            yield
        return
    lease = SlotLease(client, pool_slots_name(pool), should_stop=raise_if_cancelled)
    lease.acquire()
    try:
        yield
    finally:
        if not lease.release():
            logger().warning("could not give back the slot of %s (the server was away); its lease frees it", pool_slots_name(pool))

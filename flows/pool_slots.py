"""A job holds one slot of its pool's limit while its command runs.

`jobcloud deploy --limit cpu=8` sets the pool's own limit and a Prefect global concurrency
limit `jobcloud-pool-cpu` of the same size (`jobcloud.deployments.pools.work_pools.sync_pool_slots`). Prefect
checks a pool's limit only when a worker asks for work, so several busy workers can start a few
runs past it; the global limit's slots are leased on the server, so no more than the limit's
commands of a pool ever run at once. A pool without a limit has no such global limit, and
Prefect skips the acquisition (one request).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

POOL_ENV = "JOBCLOUD_POOL"  # set by the pool's job template


def pool_slots_name(pool: str) -> str:
    """The global concurrency limit of ``pool`` (`jobcloud-pool-cpu`)."""
    return f"jobcloud-pool-{pool}"


@contextmanager
def pool_slot() -> Iterator[None]:
    """Hold one slot of this run's pool (none outside a pool: `run --local`)."""
    pool = os.environ.get(POOL_ENV)
    if not pool:
        yield
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(pool_slots_name(pool), occupy=1, strict=False):
        yield

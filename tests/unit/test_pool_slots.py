"""A pool's limit is mirrored in a Prefect global concurrency limit (deploy side), and a job
holds one slot of it only inside a pool (flow side)."""

from __future__ import annotations

from types import SimpleNamespace

from prefect.exceptions import ObjectNotFound

import jobcloud.flows.pool_slots as pool_slots
from jobcloud.deployments.pools.work_pools import sync_pool_slots


class FakeClient:
    def __init__(self, limits: dict[str, int] | None = None) -> None:
        self.limits = dict(limits or {})

    def read_global_concurrency_limit_by_name(self, name: str) -> SimpleNamespace:
        if name not in self.limits:
            raise ObjectNotFound(http_exc=Exception(name))
        return SimpleNamespace(limit=self.limits[name])

    def upsert_global_concurrency_limit_by_name(self, name: str, limit: int) -> None:
        self.limits[name] = limit

    def delete_global_concurrency_limit_by_name(self, name: str) -> None:
        if name not in self.limits:
            raise ObjectNotFound(http_exc=Exception(name))
        del self.limits[name]


def test_a_pool_limit_becomes_a_global_limit_of_the_same_size() -> None:
    client = FakeClient()
    changes = sync_pool_slots(client, "cpu", 8)
    assert client.limits == {"jobcloud-pool-cpu": 8}
    assert [(c.name, c.action) for c in changes] == [("cpu/slots", "created")]
    assert sync_pool_slots(client, "cpu", 8) == []  # idempotent
    assert [c.action for c in sync_pool_slots(client, "cpu", 4)] == ["updated"]
    assert client.limits == {"jobcloud-pool-cpu": 4}


def test_no_limit_given_leaves_it_and_zero_removes_it() -> None:
    client = FakeClient({"jobcloud-pool-gpu": 2})
    assert sync_pool_slots(client, "gpu", None) == [] and client.limits == {"jobcloud-pool-gpu": 2}
    assert [c.action for c in sync_pool_slots(client, "gpu", 0)] == ["deleted"]
    assert client.limits == {}
    assert sync_pool_slots(client, "gpu", 0) == []


def test_a_job_holds_a_slot_only_inside_a_pool(monkeypatch) -> None:
    taken: list[str] = []

    class FakeConcurrency:
        def __init__(self, name: str, occupy: int, strict: bool, lease_duration: float, raise_on_lease_renewal_failure: bool) -> None:
            assert occupy == 1 and strict is False  # a pool without a limit has no global limit
            # A dead host's slot frees after Prefect's shortest lease; a cut-off host is the fence's.
            assert lease_duration == 60 and raise_on_lease_renewal_failure is False
            taken.append(name)

        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: object) -> None:
            return None

    import prefect.concurrency.sync as sync

    monkeypatch.setattr(sync, "concurrency", FakeConcurrency)
    monkeypatch.delenv(pool_slots.POOL_ENV, raising=False)
    with pool_slots.pool_slot():
        pass
    assert taken == []  # `run --local`: no pool, no slot
    monkeypatch.setenv(pool_slots.POOL_ENV, "cpu")
    with pool_slots.pool_slot(FakeClient({"jobcloud-pool-cpu": 2})):
        pass
    assert taken == ["jobcloud-pool-cpu"]


def test_a_pool_without_a_limit_asks_for_no_slot(monkeypatch, caplog) -> None:
    """A pool deployed without --limit has no global limit: no acquisition is asked for, so
    Prefect logs no "Concurrency limits [...] do not exist - skipping acquisition" in the job."""
    import logging

    import prefect.concurrency.sync as sync

    def refuse(*args: object, **kwargs: object) -> None:
        # What Prefect does for a limit that does not exist (strict=False): warn, then skip.
        logging.getLogger("prefect.concurrency").warning("Concurrency limits %s do not exist - skipping acquisition.", list(args[:1]))
        raise AssertionError("asked for a slot of a limit that does not exist")

    monkeypatch.setattr(sync, "concurrency", refuse)
    monkeypatch.setenv(pool_slots.POOL_ENV, "cpu")
    with caplog.at_level(logging.WARNING), pool_slots.pool_slot(FakeClient({"jobcloud-pool-gpu": 1})):
        pass
    assert not any("do not exist" in r.getMessage() for r in caplog.records)
    assert pool_slots.limit_exists("jobcloud-pool-gpu", FakeClient({"jobcloud-pool-gpu": 1}))
    assert not pool_slots.limit_exists("jobcloud-pool-cpu", FakeClient())

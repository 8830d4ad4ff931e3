"""A pool's limit is mirrored in a Prefect global concurrency limit (deploy side), and a job
holds one slot of it only inside a pool (flow side)."""

from __future__ import annotations

from types import SimpleNamespace

from prefect.exceptions import ObjectNotFound

import jobcloud.flows.pool_slots as pool_slots
from jobcloud.deployments.pools.work_pools import sync_pool_slots
from jobcloud.flows.slot_lease import SlotLease


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
    monkeypatch.delenv(pool_slots.POOL_ENV, raising=False)
    client = LeasingClient({"jobcloud-pool-cpu": 2})
    with pool_slots.pool_slot(client):
        pass
    assert client.calls == []  # `run --local`: no pool, no slot
    monkeypatch.setenv(pool_slots.POOL_ENV, "cpu")
    with pool_slots.pool_slot(client):
        assert client.taken == 1
    assert client.taken == 0
    assert [c[0] for c in client.calls] == ["increment", "renew", "release-lease"]
    assert client.calls[0][1] == 60.0  # Prefect's shortest lease: a dead host's slot frees in a minute


def test_a_lease_the_server_forgot_is_released_by_name(monkeypatch) -> None:
    """Prefect 3.8.8 keeps leases in memory: after a server restart a renewal answers 410 and a
    release by lease frees nothing; the slot goes back by the limit's name instead."""
    monkeypatch.setenv(pool_slots.POOL_ENV, "cpu")
    client = LeasingClient({"jobcloud-pool-cpu": 2})
    with pool_slots.pool_slot(client):
        client.leases.clear()  # the server restarts
    assert client.taken == 0
    assert [c[0] for c in client.calls] == ["increment", "renew", "release-name"]


def test_a_lease_that_may_have_run_out_is_left_alone() -> None:
    """Unrenewed for a whole lease (the host was cut off): the server has freed the slot itself."""
    client = LeasingClient({"jobcloud-pool-cpu": 2})
    lease = SlotLease(client, "jobcloud-pool-cpu")
    lease.acquire()
    client.leases.clear()
    client.taken = 0  # what the server's lease expiry did
    lease.renewed_at -= 61
    assert lease.release()  # the server answers; the lease it no longer has frees nothing twice
    assert client.taken == 0 and "release-name" not in [c[0] for c in client.calls]


class Gone(Exception):
    def __init__(self, code: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(code)
        self.response = SimpleNamespace(status_code=code, headers=headers or {})


class LeasingClient(FakeClient):
    """The concurrency calls of Prefect's sync client, over one in-memory limit."""

    def __init__(self, limits: dict[str, int]) -> None:
        super().__init__(limits)
        self.taken = 0
        self.leases: set[str] = set()
        self.calls: list[tuple[str, object]] = []

    def increment_concurrency_slots_with_lease(self, names: list[str], slots: int, mode: str, lease_duration: float) -> object:
        self.calls.append(("increment", lease_duration))
        if self.taken + slots > self.limits[names[0]]:
            raise Gone(423, {"Retry-After": "0.01"})
        self.taken += slots
        self.leases.add("lease-1")
        return SimpleNamespace(json=lambda: {"lease_id": "lease-1"})

    def renew_concurrency_lease(self, lease_id: str, lease_duration: float) -> None:
        self.calls.append(("renew", lease_id))
        if lease_id not in self.leases:
            raise Gone(410)

    def release_concurrency_slots_with_lease(self, lease_id: str) -> None:
        self.calls.append(("release-lease", lease_id))
        if lease_id in self.leases:
            self.leases.discard(lease_id)
            self.taken -= 1

    def release_concurrency_slots(self, names: list[str], slots: int, occupancy_seconds: float) -> None:
        self.calls.append(("release-name", names))
        self.taken -= slots


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

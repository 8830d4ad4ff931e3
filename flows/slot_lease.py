"""One slot of a Prefect global concurrency limit, held as a lease that survives a server restart.

Prefect's `concurrency()` holds a slot as a lease the process renews, so a dead host's slot is
freed when its lease runs out. But Prefect 3.8.8 keeps leases in the server's memory: a
restarted server forgets every lease while the limit's count of taken slots stays in the
database, and releasing a forgotten lease frees nothing. Each restart would leak the slots of
every job running across it, for good.

`SlotLease` holds the slot through the same public client calls (increment with a lease,
renew, decrement with the lease) and adds one rule: a lease the server calls gone (410) while
it cannot have expired (renewed less than a lease ago, on this host's monotonic clock) was
forgotten by a restart, and is then released by the limit's name. A lease that may have run
out (the host was cut off) is left alone: the server has freed it already.
"""

from __future__ import annotations

import threading
import time
from typing import Any

SLOT_LEASE_S = 60.0  # the shortest lease Prefect's server grants
RENEW_EVERY_S = SLOT_LEASE_S / 4
RETRY_AFTER_DEFAULT_S = 1.0  # a full limit's answer without Retry-After
RELEASE_PATIENCE_S = 60.0  # keep trying to give a slot back across a server restart


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


class SlotLease:
    """One slot of the limit ``name``: `acquire`, then `release`; renewed in between."""

    def __init__(self, client: Any, name: str, should_stop: Any = None) -> None:
        self.client, self.name = client, name
        self.should_stop = should_stop  # a callable: raise to give up waiting (a cancel)
        self.lease_id: Any = None
        self.acquired_at = 0.0
        self.renewed_at = 0.0  # monotonic
        self.forgotten = False  # the server lost the lease while it held
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        """Wait for a free slot (a full limit answers 423 with Retry-After), then keep it renewed."""
        while True:
            if self.should_stop is not None:
                self.should_stop()
            try:
                response = self.client.increment_concurrency_slots_with_lease(
                    names=[self.name], slots=1, mode="concurrency", lease_duration=SLOT_LEASE_S
                )
            except Exception as exc:
                if _status(exc) != 423:
                    raise
                retry_after = exc.response.headers.get("Retry-After")  # type: ignore[attr-defined]
                time.sleep(min(float(retry_after or RETRY_AFTER_DEFAULT_S), 5.0))
                continue
            self.lease_id = response.json()["lease_id"]
            self.acquired_at = self.renewed_at = time.monotonic()
            break
        self._renewer = threading.Thread(target=self._renew_forever, name="jobcloud-slot-lease", daemon=True)
        self._renewer.start()

    def _renew_forever(self) -> None:
        while not self._stop.wait(RENEW_EVERY_S):
            self._renew_once()

    def _renew_once(self) -> None:
        try:
            self.client.renew_concurrency_lease(self.lease_id, lease_duration=SLOT_LEASE_S)
        except Exception as exc:  # noqa: BLE001 - a server away: the next renewal tries again
            if _status(exc) == 410 and time.monotonic() - self.renewed_at < SLOT_LEASE_S:
                self.forgotten = True
            return
        self.renewed_at = time.monotonic()

    def release(self) -> bool:
        """Give the slot back; True once the server took it back (or freed it itself)."""
        self._stop.set()
        deadline = time.monotonic() + RELEASE_PATIENCE_S
        while True:
            try:
                if not self.forgotten:
                    self._renew_once()  # also tells a lease forgotten since the last renewal
                if self.forgotten:
                    occupied = time.monotonic() - self.acquired_at
                    self.client.release_concurrency_slots(names=[self.name], slots=1, occupancy_seconds=occupied)
                else:
                    self.client.release_concurrency_slots_with_lease(self.lease_id)
                return True
            except Exception:  # noqa: BLE001 - the server restarting: try again for a while
                if time.monotonic() > deadline or time.monotonic() - self.renewed_at >= SLOT_LEASE_S:
                    return False  # the lease has run out by now: the server freed the slot
                time.sleep(2.0)

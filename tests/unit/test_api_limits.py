"""The limits that API processes share (deployments/http_api/limits.py): the rate limit in one
SQLite file is exact over a sliding 60 s window and counts every process's requests; the
submit lock excludes other threads and other processes. Real files, real processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobcloud.deployments.http_api import limits
from jobcloud.deployments.http_api.limits import SharedRateLimiter, SubmitLock


def test_the_rate_limit_is_a_sliding_window_shared_through_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(limits.time, "time", lambda: clock[0])
    db = tmp_path / "limits.sqlite"
    a, b = SharedRateLimiter(db, 3), SharedRateLimiter(db, 3)  # as two processes would
    assert a.hit("alice") is None
    clock[0] += 10
    assert b.hit("alice") is None
    clock[0] += 10
    assert a.hit("alice") is None
    clock[0] += 10  # 3 requests in the last 30 s
    assert b.hit("alice") == pytest.approx(30)  # the first one leaves the window in 30 s
    assert a.hit("bob") is None  # another user has a count of his own
    clock[0] += 30  # the first request is 60 s old now: one more is allowed, not two
    assert a.hit("alice") is None
    assert b.hit("alice") == pytest.approx(10)
    # A new limit starts a fresh count.
    assert SharedRateLimiter(db, 5).hit("alice") is None


def test_the_rate_limit_counts_other_processes(tmp_path: Path) -> None:
    db = tmp_path / "limits.sqlite"
    code = (
        "import sys; from jobcloud.deployments.http_api.limits import SharedRateLimiter;"
        f"r = SharedRateLimiter({str(db)!r}, 10);"
        "print(sum(r.hit('carol') is None for _ in range(8)))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    here = SharedRateLimiter(db, 10)
    allowed_here = sum(here.hit("carol") is None for _ in range(8))
    allowed = allowed_here + sum(int(p.communicate(timeout=60)[0]) for p in procs)
    assert allowed == 10  # 24 requests from three processes, exactly 10 let through


def test_the_submit_lock_excludes_threads_and_processes(tmp_path: Path) -> None:
    path = tmp_path / "submit.lock"
    lock = SubmitLock(path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from jobcloud.deployments.http_api.limits import SubmitLock\n"
            f"with SubmitLock({str(path)!r}):\n    print('held', flush=True); time.sleep(1.5)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    t = time.monotonic()
    with lock:
        waited = time.monotonic() - t
    holder.wait(30)
    assert waited > 0.8  # it waited for the other process to let go

    inside: list[int] = []
    most = [0]

    def work() -> None:
        for _ in range(20):
            with lock:
                inside.append(1)
                most[0] = max(most[0], len(inside))
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert most[0] == 1

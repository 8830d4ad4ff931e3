"""The tests' one wait helper: returns the predicate's value, fails naming what it waited for
and the last value, polls about every ``interval``, and lets only the named exceptions pass."""

from __future__ import annotations

import time

import pytest

from tests.waiting import wait_until


def test_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, "", [], {"ready": True}, "later"])
    assert wait_until(lambda: next(values), timeout=5, interval=0.001) == {"ready": True}
    assert next(values) == "later"  # no call after the truthy one


def test_a_value_ready_at_once_takes_no_sleep() -> None:
    t = time.monotonic()
    assert wait_until(lambda: 42, timeout=5, interval=10) == 42
    assert time.monotonic() - t < 1


def test_times_out_with_the_message_and_the_last_value() -> None:
    calls: list[int] = []

    def never() -> list[int]:
        calls.append(1)
        return []

    t = time.monotonic()
    with pytest.raises(AssertionError) as err:
        wait_until(never, timeout=0.3, interval=0.05, message="the pool to fill")
    took = time.monotonic() - t
    assert str(err.value) == "timed out after 0.3 s waiting for the pool to fill; last value: []"
    assert 0.3 <= took < 2
    assert len(calls) >= 3  # polled more than once, and once more at the deadline


def test_a_callable_message_is_read_only_on_timeout() -> None:
    reads: list[int] = []

    def message() -> str:
        reads.append(1)
        return "worker log: idle"

    assert wait_until(lambda: True, timeout=1, message=message) is True
    assert reads == []
    with pytest.raises(AssertionError, match="waiting for worker log: idle; last value: False"):
        wait_until(lambda: False, timeout=0.05, interval=0.01, message=message)
    assert reads == [1]


def test_respects_the_interval_roughly() -> None:
    calls: list[float] = []

    def record() -> bool:
        calls.append(time.monotonic())
        return len(calls) == 4

    wait_until(record, timeout=10, interval=0.1)
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert len(gaps) == 3
    assert all(0.09 <= g < 0.6 for g in gaps), gaps  # not a busy loop, not a long nap


def test_the_last_try_is_at_the_deadline_not_an_interval_later() -> None:
    t = time.monotonic()
    with pytest.raises(AssertionError):
        wait_until(lambda: False, timeout=0.2, interval=5)
    assert time.monotonic() - t < 2


def test_ignored_exceptions_count_as_not_yet_and_others_go_through() -> None:
    attempts = iter([ConnectionRefusedError("not up"), ConnectionRefusedError("not up"), "up"])

    def probe() -> str:
        value = next(attempts)
        if isinstance(value, Exception):
            raise value
        return value

    def down() -> str:
        raise ConnectionRefusedError("down")

    assert wait_until(probe, timeout=5, interval=0.001, ignore=(OSError,)) == "up"
    with pytest.raises(AssertionError, match=r"last value: ConnectionRefusedError\('down'\)"):
        wait_until(down, timeout=0.05, interval=0.01, ignore=(OSError,))
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, timeout=5, ignore=(OSError,))


def test_an_assertion_in_the_predicate_gives_up_at_once() -> None:
    def dead() -> bool:
        raise AssertionError("the server exited")

    t = time.monotonic()
    with pytest.raises(AssertionError, match="the server exited"):
        wait_until(dead, timeout=30)
    assert time.monotonic() - t < 1

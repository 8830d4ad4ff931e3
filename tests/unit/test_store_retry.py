"""Which errors are retried, and how: 5xx, throttling and dropped connections are; bad
credentials, missing keys and checksum mismatches are not."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from jobcloud.blocks.errors import MissingKeyError
from jobcloud.blocks.transfer import base as transfer
from jobcloud.blocks.transfer.base import StoreAccessError, TransferError, is_transient, retrying


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_client_error("InternalError", 500), True),
        (_client_error("ServiceUnavailable", 503), True),
        (_client_error("SlowDown", 503), True),
        (_client_error("Throttling", 400), True),
        (_client_error("TooManyRequests", 429), True),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (_client_error("AccessDenied", 403), False),
        (_client_error("NoSuchBucket", 404), False),
        (StoreAccessError("bad credentials"), False),
        (MissingKeyError("k", "s3://b"), False),
        (TransferError("SHA-256 differs"), False),
    ],
)
def test_transient_errors(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_a_short_transfer_is_transient_and_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer.time, "sleep", lambda s: None)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            transfer.check_size("download of x", 10, 20)
        return "whole"

    assert retrying("download of x", flaky) == "whole"
    assert len(calls) == 3


def _waits(monkeypatch: pytest.MonkeyPatch, attempts: int, jitter: float, base: float = 0.5) -> list[float]:
    """The sleeps of `retrying` over ``attempts`` failed calls, with random() fixed at ``jitter``."""
    waits: list[float] = []
    monkeypatch.setattr(transfer.time, "sleep", waits.append)
    monkeypatch.setattr(transfer.random, "random", lambda: jitter)
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise _client_error("ServiceUnavailable", 503)

    with pytest.raises(ClientError):
        retrying("upload of f", down, attempts=attempts, base=base)
    assert len(calls) == attempts  # every attempt made, then the last error raised
    return waits


def test_retries_back_off_exponentially_and_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # The schedule: base * 2**(n-1), at most 8 s, times a jitter factor 0.5..1.5.
    assert _waits(monkeypatch, 4, jitter=0.5) == [0.5, 1.0, 2.0]  # factor 1: the bare schedule
    assert _waits(monkeypatch, 7, jitter=0.5, base=1.0) == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]  # capped at 8 s
    assert _waits(monkeypatch, 3, jitter=0.0) == [0.25, 0.5]  # the least jitter halves a wait
    assert _waits(monkeypatch, 3, jitter=0.999) == pytest.approx([0.7495, 1.499])  # the most adds half


def test_permanent_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer.time, "sleep", lambda s: pytest.fail("slept on a permanent error"))
    with pytest.raises(ClientError):
        retrying("x", lambda: (_ for _ in ()).throw(_client_error("AccessDenied", 403)))

"""Which errors are retried, and how: 5xx, throttling and dropped connections are; bad
credentials, missing keys and checksum mismatches are not."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from blocks.transfer import base as transfer
from blocks.transfer.base import StoreAccessError, TransferError, is_transient, retrying
from blocks.errors import MissingKeyError


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


def test_retries_back_off_and_give_up(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(transfer.time, "sleep", waits.append)

    def down() -> None:
        raise _client_error("ServiceUnavailable", 503)

    with pytest.raises(ClientError):
        retrying("upload of f", down, attempts=4)
    assert len(waits) == 3
    assert waits[0] < waits[-1] * 2  # grows (with jitter)


def test_permanent_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer.time, "sleep", lambda s: pytest.fail("slept on a permanent error"))
    with pytest.raises(ClientError):
        retrying("x", lambda: (_ for _ in ()).throw(_client_error("AccessDenied", 403)))

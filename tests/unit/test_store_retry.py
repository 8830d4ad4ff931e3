"""Which errors are retried, and how: 5xx, throttling and dropped connections are; bad
credentials, missing keys and checksum mismatches are not. One layer retries a file transfer,
with the budget docs/job-stores.md states: counted here request by request."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, EndpointConnectionError, IncompleteReadError, ReadTimeoutError
from s3transfer.exceptions import RetriesExceededError

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
        (IncompleteReadError(actual_bytes=1, expected_bytes=2), True),
        (RetriesExceededError(ReadTimeoutError(endpoint_url="http://x")), True),  # s3transfer's wrapper
        (RetriesExceededError(_client_error("AccessDenied", 403)), False),
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
    assert _waits(monkeypatch, 4, jitter=0.5, base=0.5) == [0.5, 1.0, 2.0]  # factor 1: the bare schedule
    assert _waits(monkeypatch, transfer.ATTEMPTS, jitter=0.5, base=transfer.BACKOFF_BASE_S) == [1.0, 2.0, 4.0, 8.0]  # the default
    assert _waits(monkeypatch, 7, jitter=0.5, base=1.0) == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]  # capped at 8 s
    assert _waits(monkeypatch, 3, jitter=0.0, base=0.5) == [0.25, 0.5]  # the least jitter halves a wait
    assert _waits(monkeypatch, 3, jitter=0.999, base=0.5) == pytest.approx([0.7495, 1.499])  # the most adds half
    most = _waits(monkeypatch, transfer.ATTEMPTS, jitter=0.999999, base=transfer.BACKOFF_BASE_S)
    assert sum(most) == pytest.approx(transfer.worst_case_wait_s(), rel=1e-5)  # the documented worst case


def test_permanent_errors_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transfer.time, "sleep", lambda s: pytest.fail("slept on a permanent error"))
    with pytest.raises(ClientError):
        retrying("x", lambda: (_ for _ in ()).throw(_client_error("AccessDenied", 403)))


# -- one layer, one budget ----------------------------------------------------------------


class _Raw:
    """The body of a canned HTTP response, as botocore reads it."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


def _always_503(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[str]]:
    """An `S3Transfer` whose every HTTP request is answered 503 before it leaves this process
    (botocore's before-send hook); the list records each request that botocore sent."""
    from s3fs import S3FileSystem

    from jobcloud.blocks.transfer.s3 import S3Transfer

    monkeypatch.setattr(transfer.time, "sleep", lambda s: None)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    fs = S3FileSystem(key="k", secret="s", endpoint_url="http://127.0.0.1:9", skip_instance_cache=True)
    t = S3Transfer(fs)
    sent: list[str] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        sent.append(request.method)
        body = b"<Error><Code>ServiceUnavailable</Code><Message>down</Message></Error>"
        return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, _Raw(body))

    t.client.meta.events.register("before-send.s3", answer)
    return t, sent


def test_a_failing_s3_upload_is_tried_exactly_the_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    t, sent = _always_503(monkeypatch)
    f = tmp_path / "f.bin"
    f.write_bytes(b"x" * 1000)
    with pytest.raises(TransferError, match="f.bin|503|ServiceUnavailable"):
        t.upload(f, "bucket/in/f.bin", transfer.no_progress)
    # One PUT per attempt: botocore itself tried each request once, and gave no retry of its own.
    assert sent == ["PUT"] * transfer.ATTEMPTS


def test_a_failing_s3_download_is_tried_exactly_the_budget(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    t, sent = _always_503(monkeypatch)
    with pytest.raises(TransferError):
        t.download("bucket/in/f.bin", tmp_path / "f.bin", transfer.no_progress, size_hint=1000)
    assert sent == ["GET"] * transfer.ATTEMPTS
    assert not list(tmp_path.iterdir())  # nothing half-written is left


def test_fsspec_transfers_add_no_retries_of_their_own(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """gcsfs retries each request itself: a loop around it would multiply its budget."""
    from jobcloud.blocks.transfer.generic import FsspecTransfer

    opened: list[str] = []

    class Down:
        def open(self, path: str, *args: Any, **kwargs: Any) -> Any:
            opened.append(path)
            raise ConnectionResetError(104, "Connection reset by peer")  # transient: would be retried

    monkeypatch.setattr(transfer.time, "sleep", lambda s: pytest.fail("slept: a retry loop around gcsfs"))
    f = tmp_path / "f.bin"
    f.write_bytes(b"x")
    with pytest.raises(ConnectionResetError):
        FsspecTransfer(Down()).upload(f, "bucket/f.bin", transfer.no_progress)
    with pytest.raises(ConnectionResetError):
        FsspecTransfer(Down()).download("bucket/f.bin", tmp_path / "g.bin", transfer.no_progress)
    assert opened == ["bucket/f.bin", "bucket/f.bin"]


def test_the_transfer_tasks_have_no_prefect_retries() -> None:
    """Prefect retrying stage-inputs or upload-outputs would redo every file, each with the
    store's own budget: the third layer this budget replaces."""
    from jobcloud.flows import job

    assert job.stage_inputs.retries == 0
    assert job.upload_outputs.retries == 0
    # ...and no call site gives them other options (with_options would override the decorator).
    source = inspect.getsource(job)
    assert "stage_inputs.with_options" not in source and "upload_outputs.with_options" not in source


def test_the_docs_state_the_budget() -> None:
    doc = " ".join((Path(__file__).parents[2] / "docs" / "job-stores.md").read_text().split())
    m = re.search(r"a transfer gives up after (\d+) attempts, having waited at most ([\d.]+) s", doc)
    assert m, "docs/job-stores.md must state the retry budget"
    assert int(m.group(1)) == transfer.ATTEMPTS
    assert float(m.group(2)) == pytest.approx(transfer.worst_case_wait_s())

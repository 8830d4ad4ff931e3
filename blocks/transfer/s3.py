"""S3 (and S3-compatible) transfers with boto3: streamed, hashed in the same pass, verified.

Uploads up to 64 MiB are one PUT whose ``x-amz-checksum-sha256`` the server checks; larger
ones go multipart through s3transfer, fed by a sequential hashing reader (parts upload
concurrently, at most a few buffered). Downloads over 8 MiB are concurrent ranged GETs that
s3transfer puts back in order (bounded) into a sequential hashing writer. Every object
carries its SHA-256 (metadata, or a tag for multipart ones) and downloads are checked
against it and against the size. See `jobcloud.blocks.transfer.base` for retries and the protocol.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, NoCredentialsError
from s3transfer.manager import TransferConfig, TransferManager

from jobcloud.blocks.errors import MissingKeyError, StorageError, UserError
from jobcloud.blocks.transfer.base import (
    CHUNK,
    SINGLE,
    SMALL,
    TINY,
    Progress,
    StoreAccessError,
    TransferError,
    check_sha,
    check_size,
    log,
    retrying,
    tmp_beside,
)


class _HashingReader:
    """A file read front to back, hashed as it goes; not seekable, so s3transfer reads it
    sequentially from one thread and only uploads the parts concurrently."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.sha.update(data)
        self.size += len(data)
        return data

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return True


class _HashingWriter:
    """A file written front to back, hashed as it goes; not seekable, so s3transfer orders
    the ranged GETs' chunks before writing (a bounded queue)."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


class _Progress:
    """An s3transfer subscriber that forwards byte counts (and tells the size it knows,
    which spares s3transfer a HEAD request of its own)."""

    def __init__(self, progress: Progress, size: int | None = None) -> None:
        self.progress = progress
        self.size = size

    def on_progress(self, future: Any = None, bytes_transferred: int = 0, **kwargs: Any) -> None:
        if bytes_transferred > 0:
            self.progress(bytes_transferred)

    def on_queued(self, future: Any = None, **kwargs: Any) -> None:
        if self.size is not None and future is not None:
            future.meta.provide_transfer_size(self.size)

    def on_done(self, **kwargs: Any) -> None: ...


def s3_client_args(fs: Any) -> dict[str, Any]:
    """boto3 client arguments equal to what an s3fs filesystem was given."""
    kw: dict[str, Any] = {}
    ck = dict(getattr(fs, "client_kwargs", None) or {})
    endpoint = getattr(fs, "endpoint_url", None) or ck.get("endpoint_url")
    if endpoint:
        kw["endpoint_url"] = endpoint
    if ck.get("region_name"):
        kw["region_name"] = ck["region_name"]
    for ours, theirs in (("aws_access_key_id", "key"), ("aws_secret_access_key", "secret"),
                         ("aws_session_token", "token")):  # fmt: skip
        if getattr(fs, theirs, None):
            kw[ours] = getattr(fs, theirs)
    return kw


class S3Transfer:
    """Transfers to and from one S3 (or S3-compatible) endpoint with boto3."""

    request_attempts = 1
    """Attempts of each request by botocore itself: one, so no retries of its own. The whole
    file is retried by `retrying` (`jobcloud.blocks.transfer.base.ATTEMPTS`), the one retry
    layer: botocore's attempts would multiply that budget."""

    def __init__(self, fs: Any, concurrency: int = 8) -> None:
        self.fs = fs
        # No request retries by botocore (nor s3transfer's download retries below): `retrying`
        # retries the whole file, and two layers would multiply into dozens of tries.
        config = Config(
            # total_max_attempts counts the first request; botocore's max_attempts would not.
            retries={"total_max_attempts": self.request_attempts, "mode": "standard"},
            max_pool_connections=max(10, concurrency * 2),
            connect_timeout=5,
            read_timeout=60,
            # Each PUT carries its SHA-256 (parts: botocore's CRC32) as a signed header that the
            # server checks, so botocore need not hash every body once more to sign it.
            s3={"payload_signing_enabled": False},
        )
        self.client = boto3.session.Session().client("s3", config=config, **s3_client_args(fs))
        self.config = TransferConfig(
            multipart_threshold=SMALL,
            multipart_chunksize=CHUNK,
            max_request_concurrency=max(10, concurrency),
            max_in_memory_upload_chunks=6,
            # Parts (8 MiB each) held while they wait to be written in order: bounds memory.
            max_in_memory_download_chunks=10,
            max_io_queue_size=64,
            num_download_attempts=1,
        )
        self.manager = TransferManager(self.client, self.config)
        self.endpoint = self.client.meta.endpoint_url

    @staticmethod
    def split(path: str) -> tuple[str, str]:
        bucket, _, key = path.partition("/")
        return bucket, key

    # errors -----------------------------------------------------------------------------
    def explain(self, exc: BaseException, path: str, key: str | None = None) -> BaseException:
        """A JobCloud error that says what is wrong, for a boto error."""
        bucket, _ = self.split(path)
        if isinstance(exc, NoCredentialsError):
            return StoreAccessError(
                f"no S3 credentials for s3://{bucket}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or use a JobStoreBlock with credentials"
            )
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
                        "InvalidToken", "ExpiredToken") or status == 403:  # fmt: skip
                return StoreAccessError(
                    f"the S3 endpoint {self.endpoint} refused the credentials for s3://{bucket} "
                    f"({code or status}); check the access key and secret (AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY or the JobStoreBlock)"
                )
            if code == "NoSuchBucket":
                return StoreAccessError(f"the bucket {bucket!r} does not exist at {self.endpoint}")
            if code in ("NoSuchKey", "404") and key is not None:
                if not self.bucket_exists(bucket):
                    return StoreAccessError(f"the bucket {bucket!r} does not exist at {self.endpoint}")
                return MissingKeyError(key, f"s3://{path.rsplit('/', 1)[0]}")
        if isinstance(exc, TransferError):
            return exc
        return TransferError(f"transfer of s3://{path} failed: {exc}")

    def bucket_exists(self, bucket: str) -> bool:
        """Whether the bucket is there (raising `StoreAccessError` on bad credentials)."""
        try:
            self.client.head_bucket(Bucket=bucket)
            return True
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status == 404:
                return False
            raise self.explain(exc, bucket) from None

    def check(self, path: str) -> None:
        """Raise a clear `StoreAccessError` if the bucket is missing or credentials are bad."""
        bucket, _ = self.split(path)
        try:
            ok = self.bucket_exists(bucket)
        except StoreAccessError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise TransferError(f"the S3 endpoint {self.endpoint} cannot be reached: {exc}") from None
        if not ok:
            raise StoreAccessError(f"the bucket {bucket!r} does not exist at {self.endpoint}")

    # transfers --------------------------------------------------------------------------
    def upload(self, local: Path, path: str, progress: Progress, dir_fd: None = None) -> tuple[int, str]:
        """Upload a local file to ``bucket/key``; returns (size, sha256) of what was sent."""
        try:
            return retrying(f"upload of {local.name}", lambda: self._upload_once(local, path, progress))
        except (StorageError, UserError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.explain(exc, path) from exc

    def _upload_once(self, local: Path, path: str, progress: Progress) -> tuple[int, str]:
        bucket, key = self.split(path)
        size = os.stat(local).st_size
        if size <= SINGLE:
            return self._put_single(local, bucket, key, size, progress)
        sent = [0]

        def count(n: int) -> None:
            sent[0] += n
            progress(n)

        with open(local, "rb") as fh:
            reader = _HashingReader(fh)
            future = self.manager.upload(reader, bucket, key, subscribers=[_Progress(count, size)])
            try:
                future.result()
            except BaseException:
                progress(-sent[0])  # the retry sends these bytes again
                raise
        digest = reader.sha.hexdigest()
        check_size(f"upload of {local.name}", reader.size, size)
        head = self.client.head_object(Bucket=bucket, Key=key)
        check_size(f"upload of {local.name}", int(head["ContentLength"]), size)
        try:
            # Multipart objects get their SHA-256 as a tag (metadata is fixed before the parts).
            self.client.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": "sha256", "Value": digest}]})
        except Exception as exc:  # noqa: BLE001 - optional on S3-compatible servers
            log.debug("cannot tag %s with its sha256: %s", path, exc)
        return size, digest

    def _put_single(self, local: Path, bucket: str, key: str, size: int, progress: Progress) -> tuple[int, str]:
        """One PUT whose SHA-256 the server recomputes (it refuses the object if it differs).
        Tiny files are read once; larger ones are hashed first, then streamed from the file."""
        with open(local, "rb") as fh:
            if size <= TINY:
                body: Any = fh.read()
                raw = hashlib.sha256(body).digest()
                sent = len(body)
            else:
                h = hashlib.sha256()
                sent = 0
                while chunk := fh.read(CHUNK):
                    h.update(chunk)
                    sent += len(chunk)
                raw = h.digest()
                fh.seek(0)
                body = fh
            check_size(f"upload of {local.name}", sent, size)
            resp = self.client.put_object(
                Bucket=bucket, Key=key, Body=body, ContentLength=sent,
                ChecksumSHA256=base64.b64encode(raw).decode(), Metadata={"sha256": raw.hex()},
            )  # fmt: skip
        progress(sent)
        echoed = resp.get("ChecksumSHA256")
        if echoed and echoed != base64.b64encode(raw).decode():
            raise TransferError(f"upload of {local.name}: the server stored a different SHA-256")
        return sent, raw.hex()

    def download(self, path: str, dest: Path, progress: Progress, size_hint: int | None = None, dir_fd: None = None) -> tuple[int, str]:
        """Download ``bucket/key`` to ``dest`` (atomically); (size, sha256), both verified."""
        try:
            return retrying(f"download of {path}", lambda: self._download_once(path, dest, progress, size_hint))
        except (StorageError, UserError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.explain(exc, path, key=path) from exc

    def _download_once(self, path: str, dest: Path, progress: Progress, size_hint: int | None) -> tuple[int, str]:
        bucket, key = self.split(path)
        tmp = tmp_beside(dest)
        got = [0]

        def count(n: int) -> None:
            got[0] += n
            progress(n)

        try:
            with open(tmp, "wb") as out:
                writer = _HashingWriter(out)
                if size_hint is not None and size_hint <= SMALL:
                    # One GET, streamed in 1 MiB reads (never whole in memory, even if the
                    # object grew since it was listed).
                    resp = self.client.get_object(Bucket=bucket, Key=key)
                    total = int(resp["ContentLength"])
                    expected_sha = (resp.get("Metadata") or {}).get("sha256")
                    body = resp["Body"]
                    try:
                        while chunk := body.read(1024 * 1024):
                            writer.write(chunk)
                            count(len(chunk))
                    finally:
                        body.close()
                else:
                    head = self.client.head_object(Bucket=bucket, Key=key)
                    total = int(head["ContentLength"])
                    expected_sha = (head.get("Metadata") or {}).get("sha256")
                    version = head.get("VersionId")
                    # Concurrent ranged GETs, put back in order by s3transfer and written
                    # sequentially (all from one version where the bucket keeps versions).
                    future = self.manager.download(
                        bucket, key, writer, extra_args={"VersionId": version} if version else {},
                        subscribers=[_Progress(count, total)],
                    )  # fmt: skip
                    future.result()
                    if not expected_sha:
                        expected_sha = self._tagged_sha(bucket, key)
            check_size(f"download of s3://{path}", writer.size, total)
            digest = writer.sha.hexdigest()
            check_sha(f"download of s3://{path}", digest, expected_sha)
            os.replace(tmp, dest)
            return total, digest
        except BaseException:
            progress(-got[0])
            raise
        finally:
            if os.path.lexists(tmp):
                os.unlink(tmp)

    def copy_within(
        self, src: str, dest: str, sha256: str | None, src_dir_fd: None = None, dest_dir_fd: None = None
    ) -> tuple[int, str | None]:
        """Server-side copy (multipart for large objects); (size, sha256) of the copy."""
        sb, sk = self.split(src)
        db, dk = self.split(dest)

        def once() -> tuple[int, str | None]:
            self.manager.copy({"Bucket": sb, "Key": sk}, db, dk).result()
            head = self.client.head_object(Bucket=db, Key=dk)
            digest = sha256 or (head.get("Metadata") or {}).get("sha256") or self._tagged_sha(db, dk)
            if digest and not (head.get("Metadata") or {}).get("sha256"):
                try:
                    self.client.put_object_tagging(Bucket=db, Key=dk, Tagging={"TagSet": [{"Key": "sha256", "Value": digest}]})
                except Exception:  # noqa: BLE001 - optional on S3-compatible servers
                    pass
            return int(head["ContentLength"]), digest

        try:
            return retrying(f"copy of {src}", once)
        except (StorageError, UserError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise self.explain(exc, src, key=src) from exc

    def put_bytes(self, path: str, data: bytes) -> str:
        """Write a small object in one PUT the server verifies; returns its sha256."""
        bucket, key = self.split(path)
        raw = hashlib.sha256(data).digest()

        def put() -> None:
            self.client.put_object(
                Bucket=bucket, Key=key, Body=data,
                ChecksumSHA256=base64.b64encode(raw).decode(), Metadata={"sha256": raw.hex()},
            )  # fmt: skip

        try:
            retrying(f"write of {path}", put)
        except Exception as exc:  # noqa: BLE001
            raise self.explain(exc, path) from exc
        return raw.hex()

    def _tagged_sha(self, bucket: str, key: str) -> str | None:
        try:
            tags = self.client.get_object_tagging(Bucket=bucket, Key=key).get("TagSet", [])
        except Exception:  # noqa: BLE001 - tags are optional
            return None
        return next((t["Value"] for t in tags if t.get("Key") == "sha256"), None)

    def close(self) -> None:
        self.manager.shutdown()

"""Presigned URLs of an object store: a plain HTTP PUT or GET of one key, without credentials,
for a limited time. S3 (and S3-compatible servers) through boto3's `generate_presigned_url`,
GCS through gcsfs (`google-cloud-storage`'s V4 signing, which needs a service-account key).
A local store has none: its files go through the HTTP API itself."""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Literal

from jobcloud.blocks.errors import StorageError, UserError

Method = Literal["GET", "PUT"]


class NoPresignedUrlsError(UserError):
    """The job store cannot hand out presigned URLs (a local folder, or no signing credentials)."""


@dataclass(frozen=True)
class PresignedUrl:
    """Where and how to send the one request the URL allows."""

    url: str
    method: Method
    expires_in: int
    headers: dict[str, str] = field(default_factory=dict)


def _protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return tuple(proto) if isinstance(proto, (tuple, list)) else (proto,)


def presign(store: Any, key: str, method: Method, expires_in: int) -> PresignedUrl:
    """A URL for ``method`` of the (checked) ``key`` of ``store``, valid ``expires_in`` seconds."""
    if store.is_local:
        raise NoPresignedUrlsError(f"this store has no presigned URLs: the job store {store.url} is a local folder")
    path = store.path(key)
    protocols = _protocols(store.fs)
    if "s3" in protocols or "s3a" in protocols:
        return PresignedUrl(_s3_url(store, path, method, expires_in), method, expires_in)
    if "gs" in protocols or "gcs" in protocols:
        return PresignedUrl(_gcs_url(store, path, method, expires_in), method, expires_in)
    raise NoPresignedUrlsError(f"this store has no presigned URLs: the job store {store.url} is neither S3 nor GCS")


_s3_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _s3_client(store: Any) -> Any:
    """A boto3 client with the store's credentials and endpoint that signs with SigV4 (botocore
    would presign with the deprecated SigV2 otherwise), one per store."""
    with _lock:
        client = _s3_clients.get(store)
        if client is None:
            import boto3
            from botocore.config import Config

            from jobcloud.blocks.transfer.s3 import s3_client_args

            config = Config(signature_version="s3v4")
            client = _s3_clients[store] = boto3.session.Session().client("s3", config=config, **s3_client_args(store.fs))
        return client


def _s3_url(store: Any, path: str, method: Method, expires_in: int) -> str:
    bucket, _, key = path.partition("/")
    operation = "put_object" if method == "PUT" else "get_object"
    try:
        # Signing is local (no request): it fails only without credentials.
        return str(
            _s3_client(store).generate_presigned_url(
                operation, Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires_in, HttpMethod=method
            )
        )
    except Exception as exc:  # noqa: BLE001 - botocore's NoCredentialsError and kin
        raise NoPresignedUrlsError(f"the job store {store.url} cannot sign URLs: {exc}") from None


def _gcs_url(store: Any, path: str, method: Method, expires_in: int) -> str:
    try:
        return str(store.fs.sign(path, expiration=expires_in, method=method, version="v4"))
    except (AttributeError, ValueError, TypeError, ImportError) as exc:
        # No private key to sign with (user or anonymous credentials, an emulator).
        raise NoPresignedUrlsError(
            f"the job store {store.url} cannot sign URLs ({exc}); GCS signing needs service-account credentials"
        ) from None
    except OSError as exc:
        raise StorageError(f"the job store {store.url} failed to sign a URL: {exc}") from exc

"""Job stores named by a URL (a folder, `s3://`, `gs://`), without Prefect.

Kept apart from `jobcloud.blocks.store.store_block` on purpose: that module imports Prefect, prefect-aws and
prefect-gcp (seconds), and the command line must not import Prefect before it knows which
API to talk to.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import fsspec

from jobcloud.blocks.store.job_store import JobStore


def s3_options(
    endpoint_url: str | None = None,
    region: str | None = None,
    key: str | None = None,
    secret: str | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """s3fs options; anything left empty falls back to boto's own chain (AWS_* variables)."""
    # A fresh s3fs instance per store: fsspec's instance cache would keep the credentials
    # of whatever environment the first store of this process saw.
    opts: dict[str, Any] = {"skip_instance_cache": True}
    client_kwargs: dict[str, Any] = {}
    if endpoint_url:
        opts["endpoint_url"] = endpoint_url
    if region:
        client_kwargs["region_name"] = region
    if key:
        opts["key"] = key
    if secret:
        opts["secret"] = secret
    if token:
        opts["token"] = token
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    return opts


def gcs_emulator_mode() -> None:
    """gcsfs asks Google's gRPC control plane for each bucket's layout (60 s timeouts against
    an emulator, which has none); its plain JSON-API client is what an emulator speaks.
    Must run before gcsfs is first imported."""
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    if "gcsfs" in sys.modules:  # imported already, maybe as the extended class: pin the plain one
        for proto in ("gs", "gcs"):
            fsspec.register_implementation(proto, "gcsfs.core.GCSFileSystem", clobber=True)


def store_from_url(value: str) -> JobStore:
    """The store at a URL or folder; S3 and GCS settings come from the standard variables."""
    if value.startswith("s3://"):
        # Like a block with every field empty: the standard AWS_* variables decide.
        return JobStore(value, s3_options())
    if value.startswith(("gs://", "gcs://")):
        opts: dict[str, Any] = {}
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:
            opts = {"endpoint_url": emulator, "token": "anon"}
            gcs_emulator_mode()
        return JobStore(value, opts)
    return JobStore(value)

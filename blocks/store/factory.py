"""Which job store to open: from the settings (`JOBCLOUD_STORAGE`), a URL or folder, or a
saved `JobStoreBlock` (`block:<name>`).

`JOBCLOUD_STORAGE` is a URL (a folder, `file://`, `s3://bucket/prefix`, `gs://bucket/prefix`;
default: a folder under ~/.jobcloud) or `block:<name>`. S3 credentials and endpoint come from
the block, else from the standard AWS_* variables (`jobcloud.blocks.store.store_urls`).
"""

from __future__ import annotations

from jobcloud.blocks.settings import get_settings
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.blocks.store.store_urls import store_from_url

BLOCK_PREFIX = "block:"


def store_from_setting(value: str) -> JobStore:
    """The store a `JOBCLOUD_STORAGE` value names: `block:<name>` or a URL/folder."""
    if value.startswith(BLOCK_PREFIX):
        # Imports Prefect (seconds), which must not happen before the API is known
        # (jobcloud.deployments.server.local_server.ensure_api): only for a block.
        from jobcloud.blocks.store.store_block import load_store_block

        return load_store_block(value[len(BLOCK_PREFIX) :])
    return store_from_url(value)


def store_from_settings() -> JobStore:
    """The store that `JOBCLOUD_STORAGE` names (see the module's docstring)."""
    return store_from_setting(get_settings().storage_url)

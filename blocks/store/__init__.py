"""The job store: every input and output of every job, under one root.

- `job_store`: `JobStore`, keys in, files out, through fsspec and a `jobcloud.blocks.transfer`.
- `store_urls`: a store named by a URL or folder (credentials from the standard variables).
- `store_block`: `JobStoreBlock`, a Prefect block with a store's URL and credentials.
- `factory`: which store to open (`JOBCLOUD_STORAGE`: a URL or `block:<name>`).

May import: `blocks` only. Within: job_store < store_urls < store_block < factory.
"""

"""The job store: every input and output of every job, under one root.

- `job_store`: `JobStore`, keys in, files out, through fsspec and a `jobcloud.blocks.transfer`.
- `incoming`: a file arriving piece by piece (an HTTP upload), renamed into place when whole.
- `presign`: presigned URLs of S3 and GCS stores.
- `store_urls`: a store named by a URL or folder (credentials from the standard variables).
- `store_block`: `JobStoreBlock`, a Prefect block with a store's URL and credentials.
- `factory`: which store to open (`JOBCLOUD_STORAGE`: a URL or `block:<name>`).

May import: `blocks` only. Within: incoming, presign < job_store < store_urls < store_block < factory.
"""

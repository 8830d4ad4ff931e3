"""Moving one file between this machine and a job store: streamed, hashed, verified, retried.

- `base`: the `Transfer` protocol, its errors, sizes, retries and checks.
- `local`: `LocalTransfer` (kernel copies; the SHA-256 kept in an extended attribute).
- `generic`: `FsspecTransfer`, any fsspec filesystem (gcsfs...).
- `s3`: `S3Transfer`, boto3's transfer manager (needs the `s3` extra).
- `factory`: `transfer_for`, the implementation for a filesystem.

May import: `jobcloud.blocks.errors` only (the store imports transfers, never the reverse).
"""

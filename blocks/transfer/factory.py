"""Picks the transfer for a job store's filesystem: local disk, S3 (boto3), or any other
fsspec filesystem."""

from __future__ import annotations

from typing import Any

from fsspec.implementations.local import LocalFileSystem

from jobcloud.blocks.transfer.base import Transfer
from jobcloud.blocks.transfer.generic import FsspecTransfer
from jobcloud.blocks.transfer.local import LocalTransfer


def transfer_for(fs: Any, concurrency: int, rehash: bool = False) -> Transfer:
    """The transfer implementation for an fsspec filesystem."""
    if isinstance(fs, LocalFileSystem):
        return LocalTransfer(rehash=rehash)
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if "s3" in protocols:
        try:
            # boto3 is optional (the s3 extra) and slow to import: only for S3 stores.
            from jobcloud.blocks.transfer.s3 import S3Transfer

            return S3Transfer(fs, concurrency)
        except ImportError:  # s3fs without boto3: the generic path still works
            pass
    return FsspecTransfer(fs)

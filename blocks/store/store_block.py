"""The job store as a Prefect block: where jobs' files live, and the credentials to get there.

Register the block type with the Prefect server:

    prefect block register -m jobcloud.blocks.store.store_block

Create one in the UI (Blocks -> JobCloud Job Store) or in Python, then select it with
``JOBCLOUD_STORAGE=block:<name>``:

```python
from prefect_aws import AwsCredentials
from jobcloud.blocks.store.store_block import JobStoreBlock

JobStoreBlock(
    url="s3://lab-data/jobcloud",
    endpoint_url="https://s3.example.org",          # S3-compatible servers only
    aws_credentials=AwsCredentials(aws_access_key_id="...", aws_secret_access_key="..."),
).save("lab-store")
```

Without a block, ``JOBCLOUD_STORAGE`` is a URL (a folder, ``file://``, ``s3://bucket/prefix``,
``gs://bucket/prefix``) and credentials come from the standard variables: S3 from
``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``
(and the rest of boto's chain: profiles, instance roles); GCS from
``GOOGLE_APPLICATION_CREDENTIALS`` / application-default credentials, and
``STORAGE_EMULATOR_HOST`` for an emulator.
"""

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from jobcloud.blocks.errors import UserError
from jobcloud.blocks.store.job_store import DEFAULT_CONCURRENCY, JobStore
from jobcloud.blocks.store.store_urls import gcs_emulator_mode, s3_options

try:  # prefect-aws comes with the `s3` extra
    from prefect_aws import AwsCredentials
except ImportError:  # pragma: no cover - a store without S3 support
    AwsCredentials = None  # type: ignore[assignment,misc]
try:  # prefect-gcp comes with the `gcs` extra
    from prefect_gcp import GcpCredentials
except ImportError:  # pragma: no cover - a store without GCS support
    GcpCredentials = None  # type: ignore[assignment,misc]


class JobStoreBlock(Block):
    """Where JobCloud keeps the inputs and outputs of jobs: a local folder, an S3 (or
    S3-compatible) bucket, or a GCS bucket, with the credentials to reach it.

    Attributes:
        url: The store's root: a folder, `file://...`, `s3://bucket/prefix` or
            `gs://bucket/prefix`.
        endpoint_url: The endpoint of an S3-compatible server (SeaweedFS, MinIO, Ceph...).
            Empty for AWS itself.
        region: The S3 region (AWS_DEFAULT_REGION if empty).
        aws_credentials: A prefect-aws `AwsCredentials` block for S3.
        access_key_id: S3 access key, if no `aws_credentials` block is given.
        secret_access_key: S3 secret key, if no `aws_credentials` block is given.
        gcp_credentials: A prefect-gcp `GcpCredentials` block for GCS.
        gcs_endpoint_url: The endpoint of a GCS emulator.
        concurrency: How many files move at once.

    Example:
        Load a saved store and list its top level:
        ```python
        from jobcloud.blocks.store.store_block import JobStoreBlock

        store = JobStoreBlock.load("lab-store").job_store()
        print(store.list(""))
        ```
    """

    _block_type_name = "JobCloud Job Store"
    _block_type_slug = "jobcloud-job-store"
    _description = "Where JobCloud jobs read their inputs and write their outputs: a folder, S3 or GCS."

    url: str = Field(
        ...,
        description="Root of the store: a folder, file://..., s3://bucket/prefix or gs://bucket/prefix.",
        examples=["s3://lab-data/jobcloud", "gs://lab-data/jobcloud", "/srv/jobcloud/store"],
    )
    endpoint_url: str | None = Field(
        None,
        title="S3 endpoint URL",
        description="Endpoint of an S3-compatible server (SeaweedFS, MinIO...); empty for AWS.",
        examples=["http://127.0.0.1:8333"],
    )
    region: str | None = Field(None, description="S3 region; AWS_DEFAULT_REGION if empty.")
    aws_credentials: AwsCredentials | None = Field(  # type: ignore[valid-type]
        None, description="prefect-aws credentials block for S3."
    )
    access_key_id: str | None = Field(None, title="S3 access key ID", description="Used when no AWS credentials block is set.")
    secret_access_key: SecretStr | None = Field(
        None, title="S3 secret access key", description="Used when no AWS credentials block is set."
    )
    gcp_credentials: GcpCredentials | None = Field(  # type: ignore[valid-type]
        None, description="prefect-gcp credentials block for GCS."
    )
    gcs_endpoint_url: str | None = Field(None, title="GCS endpoint URL", description="Endpoint of a GCS emulator; empty for Google.")
    concurrency: int = Field(DEFAULT_CONCURRENCY, ge=1, le=64, description="Files moved at once.")

    @model_validator(mode="after")
    def _scheme(self) -> "JobStoreBlock":
        scheme = self.url.split("://", 1)[0] if "://" in self.url else "file"
        if scheme not in ("file", "s3", "gs", "gcs", "memory"):
            raise ValueError(f"url {self.url!r}: use a folder, file://, s3:// or gs://")
        return self

    def storage_options(self) -> dict[str, Any]:
        """fsspec options (s3fs / gcsfs) for this block; secrets are revealed only here."""
        scheme = self.url.split("://", 1)[0] if "://" in self.url else "file"
        if scheme == "s3":
            return s3_options(
                endpoint_url=self.endpoint_url,
                region=self.region,
                key=self._aws_key(),
                secret=self._aws_secret(),
                token=self._aws_token(),
            )
        if scheme in ("gs", "gcs"):
            opts: dict[str, Any] = {}
            if self.gcp_credentials is not None:
                info = self.gcp_credentials.service_account_info
                if info is not None:
                    opts["token"] = info.get_secret_value()
                elif self.gcp_credentials.service_account_file:
                    opts["token"] = str(self.gcp_credentials.service_account_file)
                if self.gcp_credentials.project:
                    opts["project"] = self.gcp_credentials.project
            if self.gcs_endpoint_url:
                opts["endpoint_url"] = self.gcs_endpoint_url
                opts.setdefault("token", "anon")
                gcs_emulator_mode()
            return opts
        return {}

    def _aws_key(self) -> str | None:
        if self.aws_credentials is not None:
            return self.aws_credentials.aws_access_key_id
        return self.access_key_id

    def _aws_secret(self) -> str | None:
        if self.aws_credentials is not None and self.aws_credentials.aws_secret_access_key:
            return self.aws_credentials.aws_secret_access_key.get_secret_value()
        return self.secret_access_key.get_secret_value() if self.secret_access_key else None

    def _aws_token(self) -> str | None:
        if self.aws_credentials is not None:
            return self.aws_credentials.aws_session_token
        return None

    def job_store(self) -> JobStore:
        """The `JobStore` this block describes."""
        return JobStore(self.url, self.storage_options(), concurrency=self.concurrency)


def load_store_block(name: str) -> JobStore:
    """The store of the saved `JobStoreBlock` ``name``."""
    try:
        block = JobStoreBlock.load(name)
    except ValueError as exc:
        raise UserError(
            f"JOBCLOUD_STORAGE='block:{name}': no JobStoreBlock named {name!r} on the Prefect server ({exc}); create one, or give a URL"
        ) from None
    return block.job_store()

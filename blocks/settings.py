"""JobCloud's settings, read from `JOBCLOUD_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _home() -> Path:
    return Path.home() / ".jobcloud"


class JobCloudSettings(BaseSettings):
    """Every setting has a default that works on one machine with no cloud account."""

    model_config = SettingsConfigDict(env_prefix="JOBCLOUD_", extra="ignore")

    home: Path = Field(
        default_factory=_home,
        description="JobCloud's own folder: the default job store, work folders, local server.",
    )
    storage: str | None = Field(
        None,
        description="Job store URL (a folder, file://, s3://bucket/prefix, gs://bucket/prefix). "
        "Default: <home>/store.",
    )
    config: Path = Field(
        Path("application_config.yaml"), description="Path of the application catalog."
    )
    workdir: Path | None = Field(
        None,
        description="Where a job's /files folder is prepared on the worker. Default: <home>/work.",
    )
    keep_workdir: bool = Field(False, description="Keep a job's work folder after it ends.")

    @property
    def storage_url(self) -> str:
        return self.storage or str(self.home / "store")

    @property
    def work_root(self) -> Path:
        return self.workdir or self.home / "work"


def get_settings() -> JobCloudSettings:
    """Settings as the environment gives them now (read on every call: tests change it)."""
    return JobCloudSettings()

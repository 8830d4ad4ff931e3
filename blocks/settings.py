"""JobCloud's settings, read from `JOBCLOUD_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
        description="Job store URL (a folder, file://, s3://bucket/prefix, gs://bucket/prefix). Default: <home>/store.",
    )
    config: Path = Field(Path("application_config.yaml"), description="Path of the application catalog.")
    workdir: Path | None = Field(
        None,
        description="Where a job's /files folder is prepared on the worker. Default: <home>/work.",
    )
    keep_workdir: bool = Field(False, description="Keep a job's work folder after it ends.")
    runner: Literal["engine", "process"] = Field(
        "engine",
        description="How a job's command runs: `engine` starts the application's container beside "
        "the flow (host mode, the `jobcloud` pools); `process` runs it as a subprocess of the flow, "
        "which itself runs inside the application's image (in-container mode, set by the job "
        "templates of Prefect's own worker types).",
    )
    files_dir: Path = Field(
        Path("/files"),
        description="In-container mode: the folder the inputs are staged to and the outputs "
        "uploaded from (the catalog's commands name /files).",
    )
    pool_types: str | None = Field(
        None,
        description="Worker type of each pool, `cpu=docker,gpu=kubernetes` (the same as "
        "`jobcloud deploy --pool-type`). Default: `jobcloud` for both.",
    )

    @property
    def storage_url(self) -> str:
        return self.storage or str(self.home / "store")

    @property
    def work_root(self) -> Path:
        return self.workdir or self.home / "work"


def get_settings() -> JobCloudSettings:
    """Settings as the environment gives them now (read on every call: tests change it)."""
    return JobCloudSettings()

"""Settings of the HTTP API, read from `JOBCLOUD_API_*` environment variables (docs/api.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class ApiSettings(BaseSettings):
    """Every limit has a default that suits one lab; a platform sets its own."""

    model_config = SettingsConfigDict(env_prefix="JOBCLOUD_API_", extra="ignore")

    keys_block: str | None = Field(
        None,
        description="Name of the Prefect Secret block holding the API keys as JSON "
        '{"<token>": {"user": "<name>", "role": "user"|"admin"}}.',
    )
    keys_file: Path | None = Field(None, description="A JSON file of the same shape (for tests and single-machine set-ups).")
    max_body_bytes: int = Field(1 * MIB, gt=0, description="Largest request body outside file uploads (JSON requests).")
    max_upload_bytes: int = Field(64 * 1024 * MIB, gt=0, description="Largest single file upload (streamed to disk, never held in memory).")
    rate_per_minute: int = Field(600, gt=0, description="Requests a user may make per minute (429 beyond).")
    max_active_jobs: int = Field(20, gt=0, description="Jobs a user may have queued or running at once (429 beyond).")
    upload_dir: Path | None = Field(
        None, description="Where uploads are spooled before they enter the job store. Default: the system temp folder."
    )


def get_api_settings() -> ApiSettings:
    """Settings as the environment gives them now."""
    return ApiSettings()

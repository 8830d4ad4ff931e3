"""Settings of the HTTP API: the `api` group (`JOBCLOUD_API_*`) of JobCloud's one settings model
(`jobcloud.blocks.settings`; docs/settings.md, docs/api.md)."""

from __future__ import annotations

from jobcloud.blocks.settings import ApiSettings, get_settings

__all__ = ["ApiSettings", "get_api_settings"]


def get_api_settings() -> ApiSettings:
    """The API's settings as the environment gives them now (`SettingsError` for a bad value)."""
    return get_settings().api

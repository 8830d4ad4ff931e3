"""Who may run what through TES: the images executors may name and the URLs outside the job store
inputs may be read from, from the API's settings (docs/tes.md#who-may-run-what).

Images: `JOBCLOUD_API_TES_IMAGES` (patterns, `*` for any), by default the catalog's own images,
so a fresh install runs what the operator already vetted and nothing else. URLs:
`JOBCLOUD_API_TES_INPUT_URLS` (none by default), applied by `jobcloud.blocks.url_policy`.
"""

from __future__ import annotations

import fnmatch
import functools
from typing import Any

from pydantic import BaseModel, ConfigDict

from jobcloud.blocks.settings import ApiSettings
from jobcloud.blocks.url_policy import UrlPolicy, split_patterns
from jobcloud.deployments.http_api.errors import ApiError

IMAGES_SETTING = "JOBCLOUD_API_TES_IMAGES"
URLS_SETTING = "JOBCLOUD_API_TES_INPUT_URLS"


def catalog_images() -> list[str]:
    """Every image the catalog names (`image_url` and `gpu_image_url` of each entrypoint); none
    when there is no readable catalog (then no image is allowed until the setting names some)."""
    from jobcloud.blocks.errors import UserError
    from jobcloud.flows.catalog import load_catalog

    try:
        catalog = load_catalog()
    except (UserError, OSError):
        return []
    found: list[str] = []
    for _, entry in catalog.entries():
        found += [i for i in (entry.handler.image_url, entry.handler.gpu_image_url) if i]
    return sorted(set(found))


def _catalog_stamp(settings: ApiSettings) -> tuple[Any, ...] | None:
    """What identifies the catalog file's content without reading it; None when the images do
    not come from the catalog (the setting names them) or it cannot be stat'ed."""
    if settings.tes_images:
        return None
    from jobcloud.flows.catalog import default_catalog_path

    path = default_catalog_path()
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)  # read again once it appears
    return (str(path), st.st_mtime_ns, st.st_size, st.st_ino)


def _names(image: str) -> list[str]:
    """The names ``image`` goes by: itself, and `NAME:latest` when it has no tag or digest (the
    engine pulls that)."""
    last = image.rsplit("/", 1)[-1]
    return [image] if ":" in last or "@" in last else [image, f"{image}:latest"]


class TesRules(BaseModel):
    """The allow-lists one request is checked against."""

    model_config = ConfigDict(frozen=True)

    images: list[str]
    url_policy: UrlPolicy

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> TesRules:
        return _rules(settings.tes_images, settings.tes_input_urls, settings.tes_input_max_bytes)

    @classmethod
    def cached(cls, settings: ApiSettings) -> TesRules:
        """`from_settings`, kept while those settings and the catalog file stay the same:
        reading and validating the catalog costs about 10 ms of CPU, which every POST /tasks
        paid. An edited catalog (a new mtime, size or inode) is read again at the next request."""
        return cached_rules(settings.tes_images, settings.tes_input_urls, settings.tes_input_max_bytes, _catalog_stamp(settings))

    def check_image(self, image: str, field: str) -> str:
        """``image`` if a pattern allows it; a 400 naming the image and the setting otherwise."""
        if any(fnmatch.fnmatchcase(name, p) for name in _names(image) for p in self.images):
            return image
        allowed = ", ".join(self.images) or "none"
        raise ApiError(
            400,
            f"{field}: image {image!r} is not allowed here ({IMAGES_SETTING}: {allowed})",
            field,
            f"use an allowed image, or ask the operator to add it to {IMAGES_SETTING} (patterns, * for any)",
        )


def _rules(images: str | None, urls: str | None, max_bytes: int) -> TesRules:
    return TesRules(
        images=split_patterns(images) if images else catalog_images(),
        url_policy=UrlPolicy(patterns=split_patterns(urls), max_bytes=max_bytes, setting=URLS_SETTING),
    )


@functools.lru_cache(maxsize=1)
def cached_rules(images: str | None, urls: str | None, max_bytes: int, catalog_stamp: tuple[Any, ...] | None) -> TesRules:
    """The rules of these settings, the last ones kept (`TesRules.cached`); ``catalog_stamp`` only
    keys the cache: an edited catalog is a new key."""
    return _rules(images, urls, max_bytes)

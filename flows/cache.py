"""Result reuse ("cached" in Chemtools): an entrypoint with `cache: true` reuses the outputs
of an earlier Completed job with the same image, command, environment and inputs.

The cache key is the SHA-256 of: the image reference and, where the engine knows it, the
image's id (a rebuilt `:latest` is another image); the command; the environment values; and,
for every input, where it was staged and the (path, size, SHA-256) of each of its files. The
store keys the inputs came from do not count: the same bytes under another name are the same
input. `cache/<key>.json` points at the job that produced the outputs; a reused job gets
copies of them under its own `jobs/<id>/` (so `jobs/<id>/artifact` chains keep working) and
its manifest says `reused_from`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from jobcloud.blocks.errors import JobCloudError
from jobcloud.blocks.keys import join_key
from jobcloud.flows.manifest import InputRecord, JobManifest, OutputRecord, job_prefix

if TYPE_CHECKING:
    from jobcloud.blocks.store.job_store import JobStore
    from jobcloud.flows.catalog import Entrypoint
    from jobcloud.flows.container_spec import ContainerSpec

log = logging.getLogger("jobcloud.cache")

CACHE_PREFIX = "cache"


class CacheEntry(BaseModel):
    """What `cache/<key>.json` holds."""

    key: str
    job_id: str
    image: str
    image_id: str | None
    created_at: datetime


@dataclass
class CacheLookup:
    """The outcome of a lookup: the key (None when the entrypoint does not cache) and the
    earlier job to reuse, if any."""

    key: str | None = None
    image_id: str | None = None
    earlier: JobManifest | None = None


def image_id(image: str) -> str | None:
    """The engine's id (content digest) of a local image, or None if it cannot tell."""
    try:
        from jobcloud.blocks.engine import docker_client

        return docker_client().images.get(image).id
    except Exception:  # noqa: BLE001 - no engine or no image: the reference alone keys it
        return None


def cache_key(image: str, image_ident: str | None, command: list[str], env: dict[str, str], inputs: list[InputRecord]) -> str:
    """The SHA-256 that identifies a job's result."""
    staged = []
    for rec in sorted(inputs, key=lambda r: (r.kind, r.staged_at)):
        base = rec.key
        files = sorted((f.key[len(base) + 1 :] if f.key != base else "", f.size, f.sha256) for f in rec.files)
        staged.append({"kind": rec.kind, "at": rec.staged_at, "files": files})
    doc = {
        "v": 1,
        "image": image,
        "image_id": image_ident,
        "command": command,
        "env": sorted(env.items()),
        "inputs": staged,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def lookup(store: JobStore, entry: Entrypoint, spec: ContainerSpec, inputs: list[InputRecord]) -> CacheLookup:
    """The earlier job whose outputs this one may reuse (only with `cache: true`)."""
    if not entry.cache:
        return CacheLookup()
    ident = image_id(spec.image)
    key = cache_key(spec.image, ident, spec.command, spec.environment, inputs)
    found = CacheLookup(key=key, image_id=ident)
    try:
        entry_doc = CacheEntry.model_validate_json(store.read_bytes(_entry_key(key)))
        earlier = JobManifest.model_validate_json(store.read_bytes(join_key(job_prefix(entry_doc.job_id), "manifest.json")))
    except (JobCloudError, ValidationError, ValueError):
        return found  # no entry, or a broken one: run the container
    if earlier.state != "Completed" or not _outputs_intact(store, earlier):
        return found
    found.earlier = earlier
    return found


def _outputs_intact(store: JobStore, manifest: JobManifest) -> bool:
    """Every output of the earlier job is still there with its size (someone may have
    removed the job's folder)."""
    try:
        present = dict(store.files(manifest.prefix))
    except JobCloudError:
        return False
    return all(present.get(o.key) == o.size for o in manifest.outputs)


def reuse_outputs(store: JobStore, earlier: JobManifest, job_id: str) -> list[OutputRecord]:
    """Copy the earlier job's outputs under ``jobs/<job_id>/``; records keep their checksums."""
    old, new = job_prefix(earlier.job_id), job_prefix(job_id)
    records = []
    for o in earlier.outputs:
        dest = new + o.key[len(old) :]
        store.copy(o.key, dest, size=o.size, sha256=o.sha256)
        records.append(o.model_copy(update={"key": dest}))
    return records


def remember(store: JobStore, found: CacheLookup, manifest: JobManifest) -> None:
    """Point the cache at a Completed job's outputs (a no-op without `cache: true`)."""
    if found.key is None or manifest.state != "Completed" or manifest.reused_from:
        return
    doc = CacheEntry(
        key=found.key,
        job_id=manifest.job_id,
        image=manifest.image,
        image_id=found.image_id,
        created_at=datetime.now(UTC),
    )
    try:
        store.write_bytes(_entry_key(found.key), doc.model_dump_json(indent=2).encode())
    except JobCloudError as exc:  # the job is done; a missing cache entry only costs a rerun
        log.warning("could not record the cache entry of job %s: %s", manifest.job_id, exc)


def _entry_key(key: str) -> str:
    return join_key(CACHE_PREFIX, f"{key}.json")

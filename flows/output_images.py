"""Images a job wrote (a loss curve, a plot) shown in the Prefect UI as artifacts of its run.

Each PNG, JPEG or GIF under the job's `output` becomes a markdown artifact with the picture
embedded as a data: URI, so the UI shows it without any access to the job store.
"""

from __future__ import annotations

import base64
import re
from pathlib import PurePosixPath

from jobcloud.blocks.store.job_store import JobStore
from jobcloud.flows.manifest import JobManifest

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}
# Artifacts live in Prefect's database: larger pictures get a link to their key instead.
MAX_EMBED_BYTES = 2 * 1024 * 1024
MAX_IMAGES = 10


def prefect_key(*parts: str) -> str:
    """A Prefect artifact key from ``parts``: lowercase letters, digits and single dashes only
    (anything else becomes a dash), e.g. ("torchfit", "train", "outputs") -> torchfit-train-outputs."""
    raw = "-".join(parts)
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", raw.lower())).strip("-")


def artifact_key(manifest: JobManifest, name: str) -> str:
    """The artifact key of one picture of an entrypoint: <app>-<entrypoint>-<file stem>."""
    return prefect_key(manifest.application, manifest.entrypoint, PurePosixPath(name).stem)


def image_markdown(name: str, key: str, data: bytes | None, size: int) -> str:
    """Markdown showing one picture: embedded when `data` is given, else its key."""
    mime = MIME[PurePosixPath(name).suffix.lower()]
    head = f"### {name}\n\n"
    if data is None:
        return head + f"Too large to embed ({size} bytes): `jobcloud files get {key} DIR`\n"
    b64 = base64.b64encode(data).decode()
    return head + f"![{name}](data:{mime};base64,{b64})\n\n`{key}` ({size} bytes)\n"


def publish_images(store: JobStore, manifest: JobManifest) -> int:
    """Create one markdown artifact per picture among the job's outputs; returns how many.

    Never raises: a picture that cannot be shown is no reason to fail a finished job.
    """
    from prefect import get_run_logger

    try:
        return _publish(store, manifest)
    except Exception as exc:  # noqa: BLE001 - store or API trouble: warn, keep the job's state
        get_run_logger().warning("could not show the job's images in the UI: %s", exc)
        return 0


def _publish(store: JobStore, manifest: JobManifest) -> int:
    from prefect.artifacts import create_markdown_artifact

    shown = 0
    for rec in manifest.outputs:
        if rec.kind != "output" or PurePosixPath(rec.key).suffix.lower() not in MIME:
            continue
        if shown >= MAX_IMAGES:
            break
        data = store.read_bytes(rec.key) if rec.size <= MAX_EMBED_BYTES else None
        name = PurePosixPath(rec.key).name
        create_markdown_artifact(
            markdown=image_markdown(name, rec.key, data, rec.size),
            key=artifact_key(manifest, name),
            description=f"{name} of job {manifest.job_id}",
        )
        shown += 1
    return shown

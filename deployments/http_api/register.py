"""`jobcloud api register`: announce every entrypoint to a Swiss AI Center core engine.

One `POST {core_url}/services` per entrypoint, with a body in the shape of the core engine's
service registration (docs/api.md shows it): name, slug, url (this API's
`/swiss/{app}/{version}/{entrypoint}`), summary, description, data_in_fields, data_out_fields,
tags, has_ai, docs_url.
"""

from __future__ import annotations

from typing import Any

from jobcloud.flows.callbacks import check_http_url
from jobcloud.flows.catalog import Catalog


def registrations(catalog: Catalog, public_url: str) -> list[dict[str, Any]]:
    """The registration bodies, one per entrypoint."""
    base = public_url.rstrip("/")
    out = []
    for ref, entry in catalog.entries():
        out.append(
            {
                "name": f"{ref.application} {ref.version} {ref.entrypoint}",
                "slug": ref.deployment_name,
                "url": f"{base}/swiss/{ref.application}/{ref.version}/{ref.entrypoint}",
                "summary": entry.description or str(ref),
                "description": entry.description or str(ref),
                "data_in_fields": [{"name": kind, "type": ["*/*"]} for kind in entry.inputs],
                "data_out_fields": [
                    {"name": name, "type": ["*/*"]}
                    for name in ("output", "log", "artifact")
                    if getattr(entry.handler.files_up, name) is not None
                ],
                "tags": [{"name": t, "acronym": t.split(":", 1)[0][:3].upper()} for t in ref.tags],
                "has_ai": False,
                "docs_url": f"{base}/docs",
            }
        )
    return out


def register(core_url: str, public_url: str, catalog: Catalog, token: str | None = None, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """POST each registration; returns [{slug, status}] (raises on a transport error)."""
    import httpx

    target = check_http_url(core_url, "--core-url").rstrip("/") + "/services"
    check_http_url(public_url, "--public-url")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    results = []
    with httpx.Client(timeout=timeout_s, headers=headers) as client:
        for body in registrations(catalog, public_url):
            response = client.post(target, json=body)
            results.append({"slug": body["slug"], "status": response.status_code})
    return results

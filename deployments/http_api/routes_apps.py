"""The registry: applications, their versions, each entrypoint's parameters and image."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, create_model

from jobcloud.deployments.http_api.auth import Principal, principal
from jobcloud.deployments.http_api.errors import ApiError
from jobcloud.flows.catalog import Catalog, Entrypoint, load_catalog
from jobcloud.flows.container_spec import image_for
from jobcloud.flows.request import flow_signature, parameter_descriptions

router = APIRouter(tags=["applications"])
IMAGE_CACHE_S = 30.0


class ImageProbe:
    """Whether the engine has an image, remembered for `IMAGE_CACHE_S` (a listing must not
    cost one engine call per entrypoint). None: the engine did not answer."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, bool | None]] = {}
        self._lock = threading.Lock()

    def present(self, image: str) -> bool | None:
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(image)
            if hit and now - hit[0] < IMAGE_CACHE_S:
                return hit[1]
        found = self._ask(image)
        with self._lock:
            self._seen[image] = (now, found)
        return found

    @staticmethod
    def _ask(image: str) -> bool | None:
        try:
            from docker.errors import ImageNotFound

            from jobcloud.blocks.engine import docker_client

            client = docker_client(timeout=10)
        except Exception:  # noqa: BLE001 - no engine here: unknown, not an error of the request
            return None
        try:
            client.images.get(image)
            return True
        except ImageNotFound:
            return False
        except Exception:  # noqa: BLE001
            return None
        finally:
            client.close()


PROBE = ImageProbe()


class VersionSummary(BaseModel):
    version: str
    entrypoints: list[str]


class Application(BaseModel):
    name: str
    default_version: str
    versions: list[VersionSummary]


class EntrypointInfo(BaseModel):
    name: str
    ref: str
    description: str | None
    image: str
    image_present: bool | None
    pool: str
    inputs: dict[str, str]
    required_inputs: list[str]
    env: list[str]
    hardware: dict[str, Any]
    timeout: int | None
    parameters: dict[str, Any]
    parameter_descriptions: dict[str, str]


class VersionInfo(BaseModel):
    application: str
    version: str
    entrypoints: list[EntrypointInfo]


def _catalog() -> Catalog:
    return load_catalog()


def default_version(versions: dict[str, Any]) -> str:
    # The catalog lists versions oldest first (DECODE's catalogs do): the last one is the default.
    return list(versions)[-1]


def _application(name: str, versions: dict[str, dict[str, Entrypoint]]) -> Application:
    return Application(
        name=name,
        default_version=default_version(versions),
        versions=[VersionSummary(version=v, entrypoints=list(eps)) for v, eps in versions.items()],
    )


def parameter_schema(entry: Entrypoint) -> dict[str, Any]:
    """The JSON schema of the entrypoint's job parameters (the Prefect run form's fields)."""
    fields = {p.name: (p.annotation, ... if p.default is p.empty else p.default) for p in flow_signature(entry).parameters.values()}
    return create_model("Parameters", **fields).model_json_schema()  # type: ignore[call-overload]


def _entrypoint(app: str, version: str, name: str, entry: Entrypoint) -> EntrypointInfo:
    image = image_for(entry, entry.hardware.limits.GPU)
    down = entry.handler.files_down
    return EntrypointInfo(
        name=name,
        ref=f"{app}/{version}/{name}",
        description=entry.description,
        image=image,
        image_present=PROBE.present(image),
        pool=entry.pool,
        inputs={k: f"/files/{getattr(down, k)}" for k in entry.inputs},
        required_inputs=list(entry.required_inputs),
        env=list(entry.app.env),
        hardware=entry.hardware.limits.model_dump(),
        timeout=entry.hardware.timeout,
        parameters=parameter_schema(entry),
        parameter_descriptions=parameter_descriptions(entry),
    )


def _versions(app: str) -> dict[str, dict[str, Entrypoint]]:
    apps = _catalog().applications
    if app not in apps:
        raise ApiError(404, f"no application {app!r}", "app", f"one of: {', '.join(sorted(apps)) or 'none'}")
    return apps[app]


@router.get("/applications", response_model=list[Application])
def list_applications(_: Principal = Depends(principal)) -> list[Application]:
    """Every application with its versions and default version."""
    return [_application(name, versions) for name, versions in _catalog().applications.items()]


@router.get("/applications/{app}", response_model=Application)
def get_application(app: str, _: Principal = Depends(principal)) -> Application:
    """One application: its versions (with their entrypoints) and the default version."""
    return _application(app, _versions(app))


@router.get("/applications/{app}/versions/{version}", response_model=VersionInfo)
def get_version(app: str, version: str, _: Principal = Depends(principal)) -> VersionInfo:
    """One version: each entrypoint's inputs, parameters (JSON schema), image and whether the
    container engine has that image."""
    versions = _versions(app)
    if version not in versions:
        raise ApiError(404, f"application {app!r} has no version {version!r}", "version", f"one of: {', '.join(versions)}")
    return VersionInfo(
        application=app,
        version=version,
        entrypoints=[_entrypoint(app, version, n, e) for n, e in versions[version].items()],
    )

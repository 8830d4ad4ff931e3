"""Which container engine runs the jobs: Docker, or Podman's Docker-compatible socket."""

from __future__ import annotations

import os
from pathlib import Path

import docker
from docker.errors import DockerException

from flows.errors import ContainerEngineError

# Where Podman serves the Docker API when no Docker engine runs (rootful, then rootless).
PODMAN_SOCKETS = (
    "/run/podman/podman.sock",
    f"{os.environ.get('XDG_RUNTIME_DIR', '/run/user/%d' % os.getuid())}/podman/podman.sock",
)


# Docker 20.10+ and Podman 4+ both serve this version of the Engine API.
API_VERSION = "1.41"


def engine_url() -> str | None:
    """`DOCKER_HOST` if set; else Docker's socket if present; else a Podman socket."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if Path("/var/run/docker.sock").exists():
        return "unix:///var/run/docker.sock"
    for sock in PODMAN_SOCKETS:
        if Path(sock).exists():
            return f"unix://{sock}"
    return None


def docker_client(timeout: int = 120) -> docker.DockerClient:
    """A Docker SDK client for the engine `engine_url()` names, checked with a ping."""
    url = engine_url()
    if url is None:
        raise ContainerEngineError(
            "no container engine found: set DOCKER_HOST, start Docker, or start Podman's API "
            "service (scripts/engine.sh does that)"
        )
    try:
        # A fixed API version skips the engine's /version round trip (0.4 s on Podman).
        version = os.environ.get("DOCKER_API_VERSION", API_VERSION)
        client = docker.DockerClient(base_url=url, timeout=timeout, version=version)
        client.ping()
    except DockerException as exc:
        raise ContainerEngineError(f"the container engine at {url} does not answer: {exc}") from None
    return client

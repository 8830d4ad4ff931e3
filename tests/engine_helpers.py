"""The tests' view of the container engine: which containers carry a label."""

from __future__ import annotations

from typing import Any


def labelled_containers(engine: str | None, label: str) -> list[Any]:
    """The containers (running or not) on ``engine`` (a DOCKER_HOST URL; None: the environment's)
    that carry ``label`` (``key`` or ``key=value``).

    Sparse: the engine's listing alone. A full listing inspects each container in turn, and one
    removed in between makes Podman answer 500 "no such container"; tests poll while a job's
    containers go. A sparse container's labels are ``attrs["Labels"]``.
    """
    import docker

    if engine is None:
        client = docker.from_env(version="1.41", timeout=30)
    else:
        client = docker.DockerClient(base_url=engine, version="1.41", timeout=30)
    return client.containers.list(all=True, sparse=True, filters={"label": label})

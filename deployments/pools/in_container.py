"""Whether an image can run in-container: the job flow itself runs inside the application's
image (Prefect's docker, kubernetes, ECS, ... workers start it) and runs the entrypoint's
command as a subprocess.

Such an image keeps JobCloud, with Prefect, in a virtual environment at `/opt/jobcloud/venv`:
the runtime images (pytorch-cpu, pytorch-cuda) link it to their /opt/venv, and `jobcloud images
wrap` adds one to any image with a usable Python. The probe asks the image itself (a throwaway
container imports the flow), because a label or a file says nothing about a venv that is broken.
"""

from __future__ import annotations

import threading
from typing import Any

from jobcloud.deployments.pools.types import DEFAULT_POOL_TYPE, is_in_container

VENV_DIR = "/opt/jobcloud/venv"
VENV_PYTHON = f"{VENV_DIR}/bin/python"
IN_CONTAINER_LABEL = "io.jobcloud.in-container"
"""Label of a wrapped image: the JobCloud version in its /opt/jobcloud/venv."""
PROBE_LABEL = "io.jobcloud.probe"
PROBE_TIMEOUT_S = 120

_lock = threading.Lock()
# image id -> reason (None: runs in-container). An image id names fixed content, so an answer
# never goes stale; a new build under the same tag has a new id.
_probed: dict[str, str | None] = {}


def run_throwaway(client: Any, image: str, argv: list[str], timeout: int = PROBE_TIMEOUT_S) -> tuple[int, str]:
    """Run `argv` (argv[0] replaces the image's entrypoint) in a container of `image` with no
    network, removed after. Returns (exit code, stdout and stderr together).

    An executable the image lacks gives exit code 127 and the engine's words, as a shell would.
    """
    import docker.errors  # here: the pool templates import this module on every `jobcloud` call

    container = None
    try:
        container = client.containers.create(
            image,
            entrypoint=[argv[0]],
            command=argv[1:],
            network_mode="none",
            labels={PROBE_LABEL: "1"},
            detach=True,
        )
        try:
            container.start()
        except docker.errors.APIError as exc:
            # Docker and Podman refuse at start when the executable is not in the image.
            return 127, str(exc.explanation or exc)
        try:
            code = int(container.wait(timeout=timeout).get("StatusCode", 1))
        except Exception:  # noqa: BLE001 - the wait timed out (requests) or the engine went away
            try:
                container.kill()
            except Exception:  # noqa: BLE001 - it ended by itself meanwhile
                pass
            return 124, f"no answer within {timeout} s"
        return code, container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except Exception:  # noqa: BLE001 - already gone (Podman may remove it first)
                pass


def probe_in_container(client: Any, image: str) -> str | None:
    """None when `image` can run the job flow in-container, else the reason in a few words.

    Runs `/opt/jobcloud/venv/bin/python -c "import jobcloud.flows.job"` in a throwaway container with
    the image's own user and environment (about 2 s); remembered per image id in this process.
    """
    import docker.errors  # here: the pool templates import this module on every `jobcloud` call

    try:
        image_id = client.images.get(image).id
    except docker.errors.ImageNotFound:
        return f"{image} is not present on this engine"
    with _lock:
        if image_id in _probed:
            return _probed[image_id]
    code, output = run_throwaway(client, image, [VENV_PYTHON, "-c", "import jobcloud.flows.job"])
    if code == 0:
        reason = None
    elif code == 127:
        reason = f"{image} has no {VENV_PYTHON} (JobCloud is not installed in it)"
    else:
        tail = " | ".join(line for line in output.strip().splitlines()[-3:] if line.strip())
        reason = f"{VENV_PYTHON} in {image} cannot import the job flow (exit {code}): {tail}"
    with _lock:
        _probed[image_id] = reason
    return reason


def in_container_uses(catalog: Any, pool_types: dict[str, str]) -> dict[str, list[str]]:
    """image -> "app/version/entrypoint (pool cpu, docker)" of each entrypoint that runs it
    in-container, in catalog order."""
    uses: dict[str, list[str]] = {}
    for ref, entry in catalog.entries():
        if is_in_container(pool_types.get(entry.pool, DEFAULT_POOL_TYPE)):
            where = f"{ref} (pool {entry.pool}, {pool_types[entry.pool]})"
            uses.setdefault(entry.handler.image_url, []).append(where)
    return uses


def in_container_warnings(uses: dict[str, list[str]], client: Any = None) -> list[str]:
    """A warning for each image in `uses` that cannot run in-container, or whose fitness cannot
    be told here (no engine, or the image is not on this engine: the pools' hosts may have it)."""
    if not uses:
        return []
    import docker.errors  # here: the pool templates import this module on every `jobcloud` call

    if client is None:
        from jobcloud.blocks.engine import docker_client

        try:
            client = docker_client(timeout=PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - no engine here: say so, the catalog is still valid
            return [
                f"no container engine answers here ({exc.__class__.__name__}); cannot tell whether {', '.join(uses)} can run in-container"
            ]
    warnings: list[str] = []
    for image, entrypoints in uses.items():
        used_by = "; ".join(entrypoints)
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            warnings.append(f"{image} (for {used_by}) is not present here; cannot tell whether it runs in-container")
            continue
        reason = probe_in_container(client, image)
        if reason:
            warnings.append(
                f"{image} cannot run in-container ({reason}), yet {used_by} run it there. "
                f"Run `jobcloud images wrap {image}` and use the tag it prints as their image_url"
            )
    return warnings

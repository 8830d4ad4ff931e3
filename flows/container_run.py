"""Run one container to its end: create, start, stream its output line by line, wait, and
always stop and remove it (also on timeout, cancellation or a crash of the caller)."""

from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from requests.exceptions import ConnectionError as RequestsConnectionError
from requests.exceptions import RequestException

from jobcloud.blocks.engine import engine_lost, engine_unavailable, engine_url_of, require_gpus
from jobcloud.blocks.errors import ContainerEngineError, ImageNotFoundError
from jobcloud.blocks.settings import get_settings
from jobcloud.flows.cancel_watch import cancel_requested, stop_reason
from jobcloud.flows.container_spec import ContainerSpec
from jobcloud.flows.job_guard import note_left_container
from jobcloud.flows.run_outcome import (
    CANCEL_GRACE_S,
    TAIL_LINES,
    LineSplitter,
    RunOutcome,
)

# Host mode's name for the outcome (both runners return a RunOutcome).
ContainerOutcome = RunOutcome


# A client that runs many containers (an array's element thread) carries this dict: image ->
# when it was last seen present, so that one look per PRESENT_FOR_S does for every element.
PRESENT_ATTR = "jobcloud_present"
PRESENT_FOR_S = 30.0


def ensure_image(client: docker.DockerClient, image: str) -> None:
    """Make sure ``image`` is present, pulling it if the engine can."""
    seen: dict[str, float] | None = getattr(client, PRESENT_ATTR, None)
    if seen is not None and time.monotonic() - seen.get(image, -PRESENT_FOR_S) < PRESENT_FOR_S:
        return
    try:
        client.images.get(image)
        if seen is not None:
            seen[image] = time.monotonic()
        return
    except ImageNotFound:
        pass
    except APIError as exc:
        raise ContainerEngineError(f"cannot inspect image {image!r}: {exc}") from None
    try:
        client.images.pull(image)
    except (ImageNotFound, NotFound) as exc:
        raise ImageNotFoundError(image, "not found locally and the registry has no such image") from exc
    except APIError as exc:
        raise ImageNotFoundError(image, f"not found locally and pulling failed: {exc.explanation}") from None


def _exit_code(container) -> int | None:
    """The exit code if the container has ended, else None."""
    container.reload()
    state = container.attrs.get("State", {})
    if state.get("Status") in ("exited", "dead", "stopped"):
        return int(state.get("ExitCode", -1))
    return None


def _wait_for_exit(container, reader: threading.Thread, deadline: float | None, watch_cancel: bool = True) -> int | None:
    """Wait until the container ends (its exit code) or ``deadline`` passes (None).

    The log stream closes when the container ends; the engine's own `wait` can lag by most of
    a second (Podman), so once the stream is closed we poll the container's state instead.
    """
    while True:
        now = time.time()
        if (deadline is not None and now >= deadline) or (watch_cancel and cancel_requested()):
            return None
        if reader.is_alive():
            reader.join(timeout=1.0 if deadline is None else max(0.0, min(1.0, deadline - now)))
        code = _exit_code(container)
        if code is not None:
            return code
        if not reader.is_alive():
            time.sleep(0.05)


def run_container(
    client: docker.DockerClient,
    spec: ContainerSpec,
    on_line: Callable[[str], None],
    on_start: Callable[[str], None] | None = None,
) -> RunOutcome:
    """Run ``spec`` to its end, calling ``on_line`` for each line of stdout/stderr.

    Stops the container after ``spec.timeout`` seconds. The container is removed in every
    case, including when this thread is interrupted (Prefect cancellation, Ctrl-C).
    """
    url = engine_url_of(client)
    # A GPU request the engine cannot honour fails here, before any container exists (Podman's
    # Docker API would accept it and run the job on the CPU).
    gpu_kwargs = require_gpus(client, spec.gpus).create_kwargs(spec.gpus) if spec.gpus > 0 else None
    try:
        ensure_image(client, spec.image)
    except RequestException as exc:
        raise engine_unavailable(url, exc) from None
    tail: deque[str] = deque(maxlen=TAIL_LINES)

    def emit(line: str) -> None:
        tail.append(line)
        on_line(line)

    splitter = LineSplitter(emit)
    try:
        container = client.containers.create(**spec.create_kwargs(gpu_kwargs))
    except ImageNotFound as exc:
        raise ImageNotFoundError(spec.image, str(exc)) from None
    except APIError as exc:
        raise ContainerEngineError(f"the engine refused to create the container: {exc.explanation or exc}") from None
    except RequestException as exc:  # after APIError, which is one too: nothing answers
        raise engine_unavailable(url, exc) from None
    outcome = RunOutcome(exit_code=None, timed_out=False, container_id=container.id)
    # The manifest says which image ran, not only the tag it was asked for (tags move).
    outcome.image_id = str(container.attrs.get("Image") or "")
    try:
        try:
            container.start()
        except APIError as exc:
            hint = f" (the job asks for {spec.gpus} GPU(s): run it on a GPU host, or pass --gpu 0)" if spec.gpus else ""
            raise ContainerEngineError(f"the engine could not start the container: {exc.explanation or exc}{hint}") from None
        outcome.started_at = time.time()
        if on_start:
            on_start(container.id)

        def pump() -> None:
            try:
                for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    splitter.feed(chunk)
            except (APIError, RequestsConnectionError):
                pass
            splitter.close()

        # The reader logs through Prefect: it needs this context (API settings, the run), or
        # Prefect's log worker falls back to starting a temporary server in the middle of the job.
        reader = threading.Thread(target=contextvars.copy_context().run, args=(pump,), name="container-logs", daemon=True)
        reader.start()
        deadline = outcome.started_at + spec.timeout if spec.timeout else None
        outcome.exit_code = _wait_for_exit(container, reader, deadline)
        if outcome.exit_code is None and cancel_requested():
            outcome.cancelled = True
            on_line(f"[jobcloud] {stop_reason()}: stopping the container")
            container.stop(timeout=CANCEL_GRACE_S)
            outcome.exit_code = _wait_for_exit(container, reader, time.time() + CANCEL_GRACE_S + 5, watch_cancel=False)
        elif outcome.exit_code is None:
            outcome.timed_out = True
            on_line(f"[jobcloud] timeout after {spec.timeout} s: stopping the container")
            grace = get_settings().stop_grace_s
            container.stop(timeout=grace)
            outcome.exit_code = _wait_for_exit(container, reader, time.time() + grace + 5, watch_cancel=False)
        reader.join(timeout=10)
        outcome.ended_at = time.time()
        outcome.tail = list(tail)
        return outcome
    except (RequestException, APIError) as exc:
        # The engine went away (or lost the container) while waiting, stopping or starting:
        # one plain sentence for the job's message, not a ConnectionError repr.
        raise engine_lost(url, exc) from None
    finally:
        try:
            container.remove(force=True)
        except NotFound:
            pass
        except (APIError, RequestException):
            # The engine is away: the job's guard removes it once the engine answers again.
            note_left_container(container.id)

"""One error hierarchy for JobCloud.

Every user mistake is a `UserError`: the command line turns it into a message and exit code 2
with no traceback. Each subclass carries the facts a caller needs, as attributes.
"""

from __future__ import annotations


class JobCloudError(Exception):
    """Root of every error JobCloud raises on purpose."""


class UserError(JobCloudError):
    """Bad input: a catalog, a key, a parameter. Nothing was started."""


class CatalogError(UserError):
    """The catalog file is missing, unreadable, or does not match the format."""

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = problems
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(where + "invalid catalog\n" + "\n".join(f"  {p}" for p in problems))


class UnknownEntrypointError(UserError):
    """APP/VERSION/ENTRYPOINT names nothing in the catalog."""


class UnsafeKeyError(UserError):
    """A job-store key that could leave the store's root or is not a plain relative path."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(
            f"invalid key {key!r}: {reason}. Keys are relative POSIX paths like 'data/exp1' "
            "(no '..', no leading '/', no backslashes, no empty segments)"
        )


class MissingKeyError(UserError):
    """A key that should exist in the job store does not."""

    def __init__(self, key: str, store: str) -> None:
        self.key = key
        self.store = store
        super().__init__(f"no such key {key!r} in the job store {store}; list what is there with `jobcloud files ls`")


class ParameterError(UserError):
    """A job parameter is not allowed for this entrypoint (env name, hardware, timeout...)."""


class StorageError(JobCloudError):
    """The job store could not be reached or refused an operation."""


class ContainerEngineError(JobCloudError):
    """The container engine is unreachable or refused to run the container."""


class EngineUnavailableError(ContainerEngineError, UserError):
    """No container engine answers where DOCKER_HOST (or the default socket) points.

    A `UserError` too: it is found before anything starts, and the fix is the user's
    (start the engine, or point DOCKER_HOST at it), so `jobcloud` exits 2.
    """


class GpuUnavailableError(ContainerEngineError, UserError):
    """A job asks for GPUs the container engine cannot give; refused before any container."""

    def __init__(self, gpus: int, engine: str, message: str) -> None:
        self.gpus = gpus
        self.engine = engine
        super().__init__(message)


class ImageNotFoundError(ContainerEngineError, UserError):
    """The entrypoint's image is neither present nor pullable."""

    def __init__(self, image: str, detail: str) -> None:
        self.image = image
        super().__init__(
            f"image {image!r} is not available to the container engine ({detail}); "
            "build it (see images/) or check handler.image_url in the catalog"
        )


class ContainerFailed(JobCloudError):
    """The application's container ended with a non-zero exit code or ran out of time."""

    def __init__(self, exit_code: int | None, tail: list[str], timed_out: bool = False) -> None:
        self.exit_code = exit_code
        self.tail = tail
        self.timed_out = timed_out
        head = "container timed out and was stopped" if timed_out else f"container exited with code {exit_code}"
        last = "\n".join(tail)
        super().__init__(f"{head}; last lines of output:\n{last}" if tail else head)


class MissingSecretError(ParameterError):
    """A secret variable names a Prefect Secret block that does not exist."""

    def __init__(self, name: str, block: str) -> None:
        self.name = name
        self.block = block
        super().__init__(
            f"secret {name} reads the Prefect Secret block {block!r}, which does not exist; create it "
            f"with `prefect block create secret` (name it {block}) or in Python: "
            f"Secret(value=...).save({block!r}) (from prefect.blocks.system import Secret), "
            f"or pass another block with --secret {name}=BLOCK"
        )

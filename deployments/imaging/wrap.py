"""`jobcloud images wrap`: make any image with a usable Python 3 able to run in-container.

The wrapped image is the application's image plus one folder, /opt/jobcloud/venv: a virtual
environment made with the image's own python, holding JobCloud and its dependencies from PyPI
(the tested versions of constraints.txt where they exist for that python). A two-stage build
does it: the first stage (the image, as root) makes the venv; the second is the image again
with only /opt/jobcloud copied in and labels added. So PATH, ENV, ENTRYPOINT, CMD, WORKDIR,
USER and the application's own Python packages stay exactly as they were, and the staged
source, CA bundle and pip stay out of the result.

Before building, a throwaway container asks the image's python3 what it is: no python3, one
older than JobCloud and Prefect need, or no venv module are refused (`WrapRefused`, exit 2)
with what to do. An image that already runs in-container is left alone.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.errors
from pydantic import BaseModel

from jobcloud import deployments
from jobcloud.blocks.errors import ContainerEngineError, UserError
from jobcloud.deployments.imaging.build import engine_client, has_image, stage_ca_bundle, stage_jobcloud_source
from jobcloud.deployments.pools.in_container import IN_CONTAINER_LABEL, VENV_DIR, probe_in_container, run_throwaway

WRAPPED_FROM_LABEL = "io.jobcloud.wrapped-from"
"""Label of a wrapped image: the id of the image it was made from."""
WRAP_HASH_LABEL = "io.jobcloud.wrap-hash"
"""Label of a wrapped image: a hash of what made it (source image id and the staged files)."""
TAG_SUFFIX = "-jobcloud"
# Run inside the image's first build stage, with the image's python (not imported here).
WRAP_SCRIPT = Path(__file__).with_name("wrap_venv.py")
# The repository root in a checkout; a regular install has no constraints.txt.
CONSTRAINTS = Path(next(iter(deployments.__path__))).resolve().parent / "constraints.txt"
# Asks the image's python what it is; python 3.0+ syntax, one JSON line on stdout.
FACTS_CODE = (
    "import json, os, sys, importlib.util as u; print(json.dumps({"
    "'version': list(sys.version_info[:3]), 'executable': sys.executable, "
    "'venv': u.find_spec('venv') is not None, 'ensurepip': u.find_spec('ensurepip') is not None, "
    f"'jobcloud_venv': os.path.exists('{VENV_DIR}')}}))"
)
PYTHON_NAMES = ("python3", "python")
# A build step's result in the build output: "--> 1d8ab5d7cc1" (Podman), " ---> 1d8ab5d7cc17" (Docker).
STEP_ID = re.compile(r"^-+>\s*(?:Using cache\s+)?([0-9a-f]{10,64})$")

Log = Callable[[str], None]


class WrapRefused(UserError):
    """The image cannot be wrapped as it is; the message names the image and what to do."""

    def __init__(self, image: str, reason: str, todo: str) -> None:
        self.image = image
        self.reason = reason
        super().__init__(f"cannot wrap {image}: {reason}. {todo}")


class PythonFacts(BaseModel):
    """What the image's python said about itself."""

    command: str
    version: tuple[int, int, int]
    executable: str
    venv: bool
    ensurepip: bool
    jobcloud_venv: bool


class WrapResult(BaseModel):
    """The image that runs in-container, and whether this call built it."""

    image: str
    tag: str
    built: bool
    seconds: float
    python: str = ""


def min_python() -> tuple[int, int]:
    """The oldest Python both JobCloud and Prefect declare they support (Requires-Python)."""
    floor = (3, 0)
    for dist in ("jobcloud", "prefect"):
        spec = importlib.metadata.metadata(dist).get("Requires-Python") or ""
        for major, minor in re.findall(r">=\s*(\d+)\.(\d+)", spec):
            floor = max(floor, (int(major), int(minor)))
    return floor


def default_tag(image: str) -> str:
    """`repo:tag` -> `repo:tag-jobcloud`; no tag -> `repo:latest-jobcloud`; a digest
    `repo@sha256:abcd...` -> `repo:sha256-abcd1234abcd-jobcloud`."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return f"{repo}:{digest.replace(':', '-')[:19]}{TAG_SUFFIX}"
    repo, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:  # the colon was a registry port (host:5000/app), not a tag
        repo, tag = image, "latest"
    return f"{repo}:{tag}{TAG_SUFFIX}"


def python_facts(client: Any, image: str) -> PythonFacts:
    """Ask the image's python3 (or python) what it is, in a throwaway container."""
    for name in PYTHON_NAMES:
        code, output = run_throwaway(client, image, [name, "-c", FACTS_CODE])
        if code == 127:
            continue  # not in the image's PATH
        lines = [line for line in output.strip().splitlines() if line.startswith("{")]
        try:
            facts = json.loads(lines[-1])
        except (IndexError, ValueError):
            if name == "python":  # a Python 2 `python` answers with a syntax error
                continue
            tail = " | ".join(output.strip().splitlines()[-3:])
            raise WrapRefused(
                image, f"its {name} did not answer (exit {code}): {tail}", "Check that `python3 -c pass` works in it."
            ) from None
        return PythonFacts(command=name, **facts)
    raise WrapRefused(
        image,
        "it has no python3 on its PATH",
        "JobCloud runs in-container with the image's own Python 3: build the application on an image "
        "with Python (e.g. FROM localhost/jobcloud/python:3.11-bookworm, or python:3.11-slim), then wrap that",
    )


def refusal(image: str, facts: PythonFacts, floor: tuple[int, int]) -> WrapRefused | None:
    """Why an image with this python cannot get a JobCloud venv, or None when it can."""
    version = ".".join(map(str, facts.version))
    if facts.version[:2] < floor:
        need = ".".join(map(str, floor))
        return WrapRefused(
            image,
            f"its {facts.command} is Python {version} ({facts.executable}); JobCloud and Prefect need {need} or newer",
            f"Build the application on a base with Python {need}+ (e.g. python:3.11-slim), then wrap that",
        )
    if not facts.venv:
        return WrapRefused(
            image,
            f"its Python {version} ({facts.executable}) has no venv module",
            "Add it to the image (Debian/Ubuntu: apt-get install python3-venv), then wrap that",
        )
    return None


def stage(dest: Path) -> None:
    """The build context: a Dockerfile is added later; _stage/ holds what the first stage needs."""
    staged = dest / "_stage"
    src = staged / "jobcloud"
    src.mkdir(parents=True)
    stage_jobcloud_source(src)
    stage_ca_bundle(staged / "ca-certificates.crt")
    constraints = staged / "constraints.txt"
    if CONSTRAINTS.exists():
        shutil.copy2(CONSTRAINTS, constraints)
    else:
        constraints.write_bytes(b"")
    # pip itself, for a python without ensurepip (Debian's python3 without python3-venv).
    import pip  # the installer of the environment JobCloud runs in

    shutil.copytree(Path(next(iter(pip.__path__))), staged / "pip" / "pip", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(WRAP_SCRIPT, staged / "wrap_venv.py")


def stage_hash(dest: Path, source_id: str) -> str:
    """Hash of the source image id, JobCloud's version and dependencies, the constraints and
    the install script. Not of JobCloud's code, as `images build` does for the runtimes: every
    edit would rewrap (minutes); `--force` copies the current code."""
    h = hashlib.sha256(source_id.encode())
    staged = dest / "_stage"
    for rel in ("jobcloud/pyproject.toml", "constraints.txt", "wrap_venv.py"):
        h.update(rel.encode() + b"\0" + (staged / rel).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def dockerfile(source_id: str, python: str) -> str:
    """Two stages: the first makes the venv as root; the second is the untouched image plus it."""
    return (
        f"FROM {source_id} AS venv\n"
        "USER root\n"
        "COPY _stage/ /tmp/jobcloud-wrap/\n"
        f'RUN ["{python}", "-I", "/tmp/jobcloud-wrap/wrap_venv.py", "/tmp/jobcloud-wrap"]\n'
        f"FROM {source_id}\n"
        f"COPY --from=venv {Path(VENV_DIR).parent} {Path(VENV_DIR).parent}\n"
    )


def jobcloud_version() -> str:
    """The version of JobCloud that a wrap installs (the one running here)."""
    return importlib.metadata.version("jobcloud")


def build_wrapped(client: Any, ctx: Path, tag: str, labels: dict[str, str], log: Log, steps: list[str]) -> None:
    """Build the context `ctx` as `tag`, streaming the build's lines to `log` ("  " first).

    Appends to `steps` the ids of the images the build makes on the way (also when it fails).
    """
    tail: list[str] = []
    try:
        # pip in the first stage reaches PyPI: the host's network, as `images build` does.
        for chunk in client.api.build(path=str(ctx), tag=tag, labels=labels, rm=True, forcerm=True, network_mode="host", decode=True):
            if "error" in chunk or "errorDetail" in chunk:
                detail = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "")
                raise ContainerEngineError(f"wrapping into {tag} failed: {detail}\n" + "".join(tail[-30:]))
            line = chunk.get("stream", "")
            if line.strip():
                tail.append(line if line.endswith("\n") else line + "\n")
                log(f"  {line.rstrip()}")
                step = STEP_ID.match(line.strip())
                if step:
                    steps.append(step.group(1))
    except ContainerEngineError:
        raise
    except Exception as exc:  # the engine refused the build (APIError) or the socket broke
        raise ContainerEngineError(f"wrapping into {tag} failed: {exc}\n" + "".join(tail[-30:])) from None
    if not has_image(client, tag):
        raise ContainerEngineError(f"wrapping into {tag} failed:\n" + "".join(tail[-30:]))


def remove_leftovers(client: Any, step_ids: list[str], keep: str) -> None:
    """Remove the untagged images a build left: the first stage (the venv and the staged
    files, a few hundred MB) and its steps. Those under the result stay (the engine refuses)."""
    for short in reversed(step_ids):
        try:
            image = client.images.get(short)
            if image.tags or image.id == keep:
                continue
            client.images.remove(image.id)
        except Exception:  # noqa: BLE001 - gone with a later one, or a parent of the result
            continue


def wrap(image: str, tag: str | None = None, force: bool = False, log: Log = print, client: Any = None) -> WrapResult:
    """Make `image` able to run in-container as `tag` (default: `default_tag(image)`).

    Already able (a runtime image, or one wrapped before): nothing is built and the result names
    `image` itself. `tag` up to date (same source image and JobCloud): skipped unless `force`.
    Raises WrapRefused (a UserError) when the image's python cannot carry JobCloud.
    """
    started = time.monotonic()
    client = client or engine_client()
    try:
        source_id = client.images.get(image).id
    except docker.errors.ImageNotFound:
        raise WrapRefused(
            image, "the engine has no such image", "Build or pull it first (`podman images` / `docker images` lists what is there)"
        ) from None
    target = tag or default_tag(image)
    log(f"{image}: asking its python what it is")
    facts = python_facts(client, image)
    version = ".".join(map(str, facts.version))
    log(
        f"{image}: Python {version} at {facts.executable} (venv {'yes' if facts.venv else 'no'}, ensurepip {'yes' if facts.ensurepip else 'no'})"
    )
    if facts.jobcloud_venv:
        reason = probe_in_container(client, image)
        if reason is None:
            log(f"{image} already runs in-container (JobCloud in {VENV_DIR}): nothing to do")
            return WrapResult(image=image, tag=image, built=False, seconds=time.monotonic() - started, python=version)
        raise WrapRefused(
            image,
            f"it has a {VENV_DIR} that does not work ({reason})",
            "Wrap the image it was made from, or rebuild it",
        )
    refused = refusal(image, facts, min_python())
    if refused:
        raise refused
    if not facts.ensurepip:
        log(f"{image}: no ensurepip: the venv is made without pip and pip is bootstrapped from PyPI")
    if not CONSTRAINTS.exists():
        log(f"no {CONSTRAINTS.name} here (an installed JobCloud): pip takes the newest versions in pyproject's ranges")
    with tempfile.TemporaryDirectory(prefix="jobcloud-wrap-", dir="/var/tmp") as tmp:
        ctx = Path(tmp)
        stage(ctx)
        digest = stage_hash(ctx, source_id)
        if not force and has_image(client, target):
            labels = client.images.get(target).labels or {}
            if labels.get(WRAP_HASH_LABEL) == digest:
                log(
                    f"{target} is up to date (wrapped from this {image}, same JobCloud version and dependencies; --force copies JobCloud's current code)"
                )
                return WrapResult(image=image, tag=target, built=False, seconds=time.monotonic() - started, python=version)
        (ctx / "Dockerfile").write_text(dockerfile(source_id, facts.executable or facts.command))
        log(f"{image}: building {target}: {VENV_DIR} with JobCloud {jobcloud_version()} (pip from PyPI; a minute or two)")
        old_id = client.images.get(target).id if has_image(client, target) else ""
        labels = {IN_CONTAINER_LABEL: jobcloud_version(), WRAPPED_FROM_LABEL: source_id, WRAP_HASH_LABEL: digest}
        steps: list[str] = []
        try:
            build_wrapped(client, ctx, target, labels, log, steps)
        finally:
            remove_leftovers(client, steps, client.images.get(target).id if has_image(client, target) else "")
    if old_id and old_id not in (source_id, client.images.get(target).id):
        try:  # the wrap this one replaces, unless something still uses it
            client.images.remove(old_id)
        except Exception:  # noqa: BLE001 - in use by a container or a child image
            pass
    reason = probe_in_container(client, target)
    if reason:
        raise ContainerEngineError(f"{target} was built but cannot run in-container: {reason}")
    seconds = time.monotonic() - started
    log(f"{target}: runs in-container ({seconds:.0f} s)")
    return WrapResult(image=image, tag=target, built=True, seconds=seconds, python=version)

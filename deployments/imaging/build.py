"""Build the images listed in images/images.yaml with whatever engine answers.

Two kinds of recipe:
- a root filesystem imported as an image (`rootfs: busybox` from the host's busybox-static,
  `rootfs: debootstrap` for a Debian bookworm base with Python), for machines that reach no
  image registry; with JOBCLOUD_IMAGES_PUBLIC=1 the `public_tag` is pulled instead;
- a Dockerfile folder (`context`) whose base image is a build argument (`base_args` locally,
  `public_args` with JOBCLOUD_IMAGES_PUBLIC=1).

A Dockerfile recipe may ask for extra files in its build context (`stage`): `wheels` (file
patterns looked up in $PIP_FIND_LINKS, e.g. the local torch wheel), `ca_bundle` (the host's CA
bundle, which pip inside the build needs where HTTPS goes through a local CA) and `jobcloud`
(JobCloud's own source, for runtime images in which the flow itself runs). They land under
`_stage/` in a temporary copy of the context, so the Docker SDK works against Docker and Podman.

An image is rebuilt only when it is missing or its recipe changed: each image carries a label
with a hash of its context, build arguments and base image ids.

images/ ships inside the package as `jobcloud.images` (package data; pyproject.toml maps
it), so the builder works from a checkout, an editable install and a regular install alike.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker.errors
import yaml
from packaging.requirements import Requirement

from jobcloud import blocks, deployments, flows
from jobcloud.blocks.engine import docker_client, engine_url
from jobcloud.blocks.errors import ContainerEngineError, UserError
from jobcloud.blocks.settings import get_settings
from jobcloud.flows.catalog import load_catalog

IMAGES_DIR = Path(str(importlib.resources.files("jobcloud.images")))
"""images/: the recipes (images.yaml) and the Dockerfile folders."""
# The root package's folder, found without importing it (it is the layer above everything).
ROOT_PACKAGE = Path(importlib.util.find_spec("jobcloud").origin or "").parent
HASH_LABEL = "io.jobcloud.recipe-hash"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# JobCloud's own subpackages, copied into runtime images under jobcloud/ (tests, .venv and
# the rest stay out). In a checkout each is its own top folder (pyproject's package-dir).
JOBCLOUD_PACKAGES = (flows, blocks, deployments)
DEBIAN_SUITE = "bookworm"  # its python3 is 3.11, the same as the local torch wheel
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Log = Callable[[str], None]


def load_recipes(images_dir: Path = IMAGES_DIR) -> dict[str, dict[str, Any]]:
    """images/images.yaml: name -> recipe (tag, context, needs, base_args, public_args, stage)."""
    path = images_dir / "images.yaml"
    if not path.exists():
        raise UserError(f"{path} does not exist: nothing to build")
    return yaml.safe_load(path.read_text()) or {}


def package_folder(package: Any) -> Path:
    """The folder a JobCloud package was imported from (a checkout or site-packages)."""
    return Path(next(iter(package.__path__)))


IMAGE_EXTRAS = ("s3", "gcs")  # the extras a runtime image installs with JobCloud (no test tools)


def jobcloud_pyproject() -> str:
    """A pyproject.toml that installs the staged packages in a runtime image: the one
    installed (its name, version and dependencies), everything under `jobcloud`."""
    dist = importlib.metadata.distribution("jobcloud")
    deps = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None:
            deps.append(text)
        elif any(req.marker.evaluate({"extra": extra}) for extra in IMAGE_EXTRAS):
            # A flow that runs inside the image (in-container mode) reaches S3 and GCS stores.
            req.marker = None
            deps.append(str(req))
    return (
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "jobcloud"\nversion = "{dist.version}"\nrequires-python = ">=3.11"\n'
        f"dependencies = {json.dumps(deps)}\n\n"
        '[tool.setuptools.packages.find]\ninclude = ["jobcloud*"]\n\n'
        '[tool.setuptools.package-data]\n"jobcloud.images" = ["**/*"]\n'
    )


def catalog_images(recipes: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(recipe names whose tag the catalog refers to, catalog images no recipe builds)."""
    by_tag = {r["tag"]: n for n, r in recipes.items()}
    names: list[str] = []
    foreign: list[str] = []
    for _, entry in load_catalog().entries():
        image = entry.handler.image_url
        name = by_tag.get(image)
        if name and name not in names:
            names.append(name)
        elif not name and image not in foreign:
            foreign.append(image)
    return names, foreign


def _busybox_rootfs_tar() -> bytes:
    busybox = shutil.which("busybox")
    if not busybox:
        raise UserError("busybox is not installed: apt-get install busybox-static (or set JOBCLOUD_IMAGES_PUBLIC=1)")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "etc", "files", "usr", "usr/bin"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses (deb822 .sources or a sources.list line)."""
    candidates: list[str] = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text(errors="replace").splitlines():
            if line.strip().lower().startswith("uris:"):
                candidates += line.split(":", 1)[1].split()
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "deb":
                    candidates.append(next(p for p in parts[1:] if not p.startswith("[")))
    for uri in candidates:
        if "security" not in uri and uri.startswith(("http://", "https://")):
            return uri
    return DEFAULT_MIRROR


def _need_debootstrap(log: Log) -> str:
    found = shutil.which("debootstrap") or (Path("/usr/sbin/debootstrap").exists() and "/usr/sbin/debootstrap")
    if found:
        return str(found)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("debootstrap is missing: installing it with apt-get (it makes the Python base image)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        try:
            subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], check=True, env=env, capture_output=True)
        except subprocess.CalledProcessError:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "debootstrap"], env=env, capture_output=True)
        if Path("/usr/sbin/debootstrap").exists():
            return "/usr/sbin/debootstrap"
    raise UserError(
        "debootstrap is not installed, and it makes the Python base image where no registry is reachable: "
        "apt-get install debootstrap (as root), or set JOBCLOUD_IMAGES_PUBLIC=1 to pull python:3.11-slim-bookworm"
    )


def _import_debootstrap(client: Any, tag: str, log: Log) -> None:
    """Debian bookworm minbase with python3 and python3-venv, imported as `tag` (~40 s, ~275 MB)."""
    debootstrap = _need_debootstrap(log)
    if os.geteuid() != 0:
        raise UserError("making the Python base image with debootstrap needs root (or set JOBCLOUD_IMAGES_PUBLIC=1)")
    mirror = debian_mirror()
    with tempfile.TemporaryDirectory(prefix="jobcloud-rootfs-", dir="/var/tmp") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"debootstrap {DEBIAN_SUITE} (python3, python3-venv) from {mirror}")
        proc = subprocess.run(
            [debootstrap, "--variant=minbase", "--include=python3,python3-venv", DEBIAN_SUITE, str(root), mirror],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise ContainerEngineError(f"debootstrap failed (mirror {mirror}):\n{tail}")
        # Package caches are only weight in an image.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / sub).glob("*"):
                if p.is_file():
                    p.unlink()
        archive = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(archive), "."], check=True)
        client.api.import_image_from_file(str(archive), repository=tag, changes=[f"ENV {PATH_ENV}", "ENV LANG=C.UTF-8", 'CMD ["python3"]'])


def has_image(client: Any, tag: str) -> bool:
    """Whether the engine holds an image with this tag."""
    try:
        client.images.get(tag)
        return True
    except docker.errors.ImageNotFound:
        return False


def _image_id(client: Any, tag: str) -> str:
    try:
        return client.images.get(tag).id
    except docker.errors.ImageNotFound:
        return ""


def _find_wheels(patterns: list[str]) -> list[Path]:
    folders = [Path(p) for p in os.environ.get("PIP_FIND_LINKS", "/opt/wheels").split() if p and "://" not in p]
    found: list[Path] = []
    for pattern in patterns:
        hits = [w for d in folders if d.is_dir() for w in sorted(d.glob(pattern))]
        found += hits[:1]
    return found


def _recipe_hash(client: Any, recipe: dict[str, Any], args: dict[str, str], recipes: dict[str, dict[str, Any]]) -> str:
    """Hash of what makes the image: context files, build args, staged wheels, base image ids."""
    h = hashlib.sha256()
    ctx = IMAGES_DIR / recipe["context"]
    for path in sorted(p for p in ctx.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(ctx)).encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(repr(sorted(args.items())).encode())
    stage = recipe.get("stage", {})
    for wheel in _find_wheels(stage.get("wheels", [])):
        h.update(f"{wheel.name}:{wheel.stat().st_size}".encode())
    if stage.get("jobcloud"):
        # Only the dependency list: every code change would otherwise rebuild the runtimes
        # (minutes); `jobcloud images build NAME --force` refreshes the copied source.
        h.update(jobcloud_pyproject().encode())
    for dep in recipe.get("needs", []):
        h.update(_image_id(client, recipes[dep]["tag"]).encode())
    return h.hexdigest()[:16]


def _up_to_date(client: Any, tag: str, digest: str) -> bool:
    try:
        labels = client.images.get(tag).labels or {}
    except docker.errors.ImageNotFound:
        return False
    return labels.get(HASH_LABEL) == digest


def _stage_context(recipe: dict[str, Any], dest: Path, log: Log) -> None:
    """Copy the recipe's context to `dest`, with what `stage` asks for under `_stage/`."""
    shutil.copytree(IMAGES_DIR / recipe["context"], dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    stage = recipe.get("stage", {})
    staged = dest / "_stage"
    (staged / "wheels").mkdir(parents=True)
    patterns = stage.get("wheels", [])
    wheels = _find_wheels(patterns)
    if len(wheels) < len(patterns):
        log(f"no local wheel for {', '.join(patterns)} in $PIP_FIND_LINKS: pip inside the build will use the index")
    for wheel in wheels:
        target = staged / "wheels" / wheel.name
        try:
            os.link(wheel, target)  # same disk: no 190 MB copy
        except OSError:
            shutil.copy2(wheel, target)
    stage_ca_bundle(staged / "ca-certificates.crt", bool(stage.get("ca_bundle")))
    src = staged / "jobcloud"
    src.mkdir()
    if stage.get("jobcloud"):
        stage_jobcloud_source(src)


def stage_ca_bundle(dest: Path, wanted: bool = True) -> bool:
    """Copy the host's CA bundle to `dest` (pip in a build needs it where HTTPS goes through a
    local CA); an empty file when not wanted or absent, so a Dockerfile's COPY always works.
    Returns whether the bundle was copied."""
    if wanted and CA_BUNDLE.exists():
        shutil.copy2(CA_BUNDLE, dest)
        return True
    dest.write_bytes(b"")  # empty: the build uses its own CAs
    return False


def stage_jobcloud_source(dest: Path) -> None:
    """Copy JobCloud's packages into the folder `dest`, with a pyproject.toml that pip installs
    them from (`pip install DEST`)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    root = dest / "jobcloud"
    root.mkdir(parents=True)
    # The root package's own modules only: once installed, its folder also holds the subpackages.
    for module in ROOT_PACKAGE.glob("*.py"):
        shutil.copy2(module, root / module.name)
    for package in JOBCLOUD_PACKAGES:
        shutil.copytree(package_folder(package), root / package.__name__.rpartition(".")[2], ignore=ignore)
    shutil.copytree(IMAGES_DIR, root / "images", ignore=ignore)
    (dest / "pyproject.toml").write_text(jobcloud_pyproject())
    # The exact tested set, where there is one (a checkout): the image's JobCloud then runs on
    # the same library versions as the tests (`pip install -c`).
    constraints = ROOT_PACKAGE.parent / "constraints.txt"
    if constraints.is_file():
        shutil.copyfile(constraints, dest / "constraints.txt")


def _build_dockerfile(client: Any, name: str, recipe: dict[str, Any], args: dict[str, str], digest: str, log: Log) -> None:
    tag = recipe["tag"]
    old_id = _image_id(client, tag)
    log(f"{name}: building {tag} from images/{recipe['context']}")
    with tempfile.TemporaryDirectory(prefix=f"jobcloud-build-{name}-", dir="/var/tmp") as tmp:
        ctx = Path(tmp) / "ctx"
        _stage_context(recipe, ctx, log)
        tail: list[str] = []
        try:
            # The low-level API streams the build's output, so a long build is not silent.
            for chunk in client.api.build(
                path=str(ctx),
                tag=tag,
                buildargs=args,
                labels={HASH_LABEL: digest},
                rm=True,
                forcerm=True,
                network_mode="host",
                decode=True,
            ):
                if "error" in chunk or "errorDetail" in chunk:
                    detail = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "")
                    raise ContainerEngineError(f"building {tag} failed: {detail}\n" + "".join(tail[-30:]))
                line = chunk.get("stream", "")
                if line.strip():
                    tail.append(line if line.endswith("\n") else line + "\n")
                    log(f"  {name} | {line.rstrip()}")
        except ContainerEngineError:
            raise
        except Exception as exc:  # the engine refused the build (APIError) or the socket broke
            raise ContainerEngineError(f"building {tag} failed: {exc}\n" + "".join(tail[-30:])) from None
        if not has_image(client, tag):
            raise ContainerEngineError(f"building {tag} failed:\n" + "".join(tail[-30:]))
    if old_id and old_id != _image_id(client, tag):
        # The image this one replaces: a GB for the runtimes. Kept when something still uses it.
        try:
            client.images.remove(old_id)
        except Exception:  # noqa: BLE001 - in use by a container or a child image
            pass


def engine_client() -> Any:
    """A client of the engine that answers, or an error that says what is missing."""
    try:
        return docker_client(timeout=3600)
    except ContainerEngineError:
        raise
    except Exception as exc:  # requests' ConnectionError and the like: nothing listens there
        raise ContainerEngineError(
            f"no container engine answers at {engine_url()} ({exc.__class__.__name__}): start Docker, or Podman's "
            "API service (scripts/engine.sh installs and starts it), or point DOCKER_HOST at a running engine"
        ) from None


def build(names: list[str] | None = None, force: bool = False, log: Log = print) -> list[str]:
    """Build the named images (default: those the catalog refers to) and what they need.

    An image that exists and whose recipe did not change is skipped; `force` rebuilds the
    named images (not their bases). Returns the tags built.
    """
    recipes = load_recipes()
    unknown = [n for n in names or [] if n not in recipes]
    if unknown:
        raise UserError(f"no image {', '.join(unknown)} in images/images.yaml; known: {', '.join(recipes)}")
    if not names:
        names, foreign = catalog_images(recipes)
        for image in foreign:
            log(f"{image}: not built from images/ (the engine pulls it when a job needs it)")
    public = get_settings().images_public
    client = engine_client()
    order: list[str] = []

    def visit(n: str) -> None:
        for dep in recipes[n].get("needs", []):
            visit(dep)
        if n not in order:
            order.append(n)

    for n in names:
        visit(n)
    built = []
    for n in order:
        recipe = recipes[n]
        tag = recipe["tag"]
        forced = force and n in names
        if recipe.get("rootfs"):
            if not forced and has_image(client, tag):
                log(f"{n}: {tag} present")
                continue
            if public and recipe.get("public_tag"):
                log(f"{n}: pulling {recipe['public_tag']}")
                client.images.pull(recipe["public_tag"])
                client.images.get(recipe["public_tag"]).tag(tag)
            elif recipe["rootfs"] == "debootstrap":
                _import_debootstrap(client, tag, log)
            else:
                # Podman's API drops a separate `tag`: pass the whole reference as repository.
                client.api.import_image_from_data(_busybox_rootfs_tar(), repository=tag)
        else:
            args = {k: str(v) for k, v in (recipe.get("public_args" if public else "base_args") or {}).items()}
            digest = _recipe_hash(client, recipe, args, recipes)
            if not forced and _up_to_date(client, tag, digest):
                log(f"{n}: {tag} present and up to date")
                continue
            _build_dockerfile(client, n, recipe, args, digest, log)
        log(f"{n}: built {tag}")
        built.append(tag)
    return built


if __name__ == "__main__":
    try:
        build(sys.argv[1:] or None, log=lambda m: print(m, file=sys.stderr))
    except (UserError, ContainerEngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

"""Build the images listed in images/images.yaml with whatever engine answers.

A base like busybox can be made from the host's busybox-static when no registry is reachable;
everything else is a Dockerfile whose base image is a build argument.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import yaml

from flows.errors import ContainerEngineError, UserError

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"


def load_recipes(images_dir: Path = IMAGES_DIR) -> dict[str, dict[str, Any]]:
    """images/images.yaml: name -> recipe (tag, context, needs, base_args, public_args)."""
    path = images_dir / "images.yaml"
    if not path.exists():
        raise UserError(f"{path} does not exist: nothing to build")
    return yaml.safe_load(path.read_text()) or {}


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


def has_image(client: Any, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
        return True
    except ImageNotFound:
        return False


def build(names: list[str] | None = None, force: bool = False, log=print) -> list[str]:
    """Build the named images (default: all) and what they need; returns the tags built."""
    from blocks.engine import docker_client

    recipes = load_recipes()
    unknown = [n for n in names or [] if n not in recipes]
    if unknown:
        raise UserError(f"no image {', '.join(unknown)} in images/images.yaml; known: {', '.join(recipes)}")
    public = os.environ.get("JOBCLOUD_IMAGES_PUBLIC") == "1"
    client = docker_client(timeout=1800)
    order: list[str] = []

    def visit(n: str) -> None:
        for dep in recipes[n].get("needs", []):
            visit(dep)
        if n not in order:
            order.append(n)

    for n in names or list(recipes):
        visit(n)
    built = []
    for n in order:
        recipe = recipes[n]
        tag = recipe["tag"]
        if not force and has_image(client, tag):
            log(f"{n}: {tag} present")
            continue
        if recipe.get("rootfs"):
            if public and recipe.get("public_tag"):
                client.images.pull(recipe["public_tag"])
                client.images.get(recipe["public_tag"]).tag(tag)
            else:
                # Podman's API drops a separate `tag`: pass the whole reference as repository.
                client.api.import_image_from_data(_busybox_rootfs_tar(), repository=tag)
        else:
            args = recipe.get("public_args" if public else "base_args", {})
            log(f"{n}: building {tag} from images/{recipe['context']}")
            try:
                client.images.build(path=str(IMAGES_DIR / recipe["context"]), tag=tag, buildargs=args, rm=True, network_mode="host")
            except Exception as exc:  # the SDK raises BuildError/APIError with the build log
                raise ContainerEngineError(f"building {tag} failed: {exc}") from None
        log(f"{n}: built {tag}")
        built.append(tag)
    return built


if __name__ == "__main__":
    try:
        build(sys.argv[1:] or None, log=lambda m: print(m, file=sys.stderr))
    except (UserError, ContainerEngineError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

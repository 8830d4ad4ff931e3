"""images/images.yaml recipes: which images the catalog needs, when a rebuild is due, and what
goes into a build context. No engine needed (a stand-in client answers image lookups)."""

from __future__ import annotations

from pathlib import Path

import pytest
from docker.errors import ImageNotFound

from jobcloud.blocks.errors import UserError
from jobcloud.deployments.imaging import build as ib

ROOT = Path(__file__).resolve().parent.parent.parent


class _Images:
    def __init__(self, ids: dict[str, str]) -> None:
        self.ids = ids

    def get(self, tag: str):
        if tag not in self.ids:
            raise ImageNotFound(tag)
        return type("Image", (), {"id": self.ids[tag], "labels": {}})()


class _Client:
    def __init__(self, ids: dict[str, str] | None = None) -> None:
        self.images = _Images(ids or {})


def test_default_images_are_those_the_catalog_refers_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_CONFIG", str(ROOT / "application_config.yaml"))
    names, foreign = ib.catalog_images(ib.load_recipes())
    assert names == ["linefit", "torchfit"] and foreign == []


def test_every_recipe_is_buildable_in_order() -> None:
    recipes = ib.load_recipes()
    for name, r in recipes.items():
        assert r["tag"].startswith("localhost/jobcloud/"), name
        assert all(dep in recipes for dep in r.get("needs", [])), name
        assert bool(r.get("rootfs")) != bool(r.get("context")), name
        if r.get("context"):
            assert (ib.IMAGES_DIR / r["context"] / "Dockerfile").exists(), name
    assert recipes["pytorch-cpu"]["stage"]["wheels"] == ["torch-2.13.0+cpu-cp311-*.whl"]


def test_unknown_names_are_a_user_error_listing_the_known_ones() -> None:
    with pytest.raises(UserError, match="no image nope .*known: .*torchfit"):
        ib.build(["nope"])


def test_recipe_hash_follows_build_args_and_base_images() -> None:
    recipes = ib.load_recipes()
    r = recipes["torchfit"]
    a = ib._recipe_hash(_Client({"localhost/jobcloud/pytorch-cpu:2.13.0": "sha256:1"}), r, {"BASE": "x"}, recipes)
    assert a == ib._recipe_hash(_Client({"localhost/jobcloud/pytorch-cpu:2.13.0": "sha256:1"}), r, {"BASE": "x"}, recipes)
    assert a != ib._recipe_hash(_Client({"localhost/jobcloud/pytorch-cpu:2.13.0": "sha256:1"}), r, {"BASE": "y"}, recipes)
    # A rebuilt base (new id) makes the application image stale.
    assert a != ib._recipe_hash(_Client({"localhost/jobcloud/pytorch-cpu:2.13.0": "sha256:2"}), r, {"BASE": "x"}, recipes)


def test_stage_context_brings_the_wheel_the_ca_bundle_and_jobcloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl").write_bytes(b"wheel")
    (wheels / "other-1.0-py3-none-any.whl").write_bytes(b"other")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    ctx = tmp_path / "ctx"
    ib._stage_context(ib.load_recipes()["pytorch-cpu"], ctx, log=lambda m: None)
    assert (ctx / "Dockerfile").exists()
    assert [p.name for p in (ctx / "_stage" / "wheels").iterdir()] == ["torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl"]
    assert (ctx / "_stage" / "jobcloud" / "pyproject.toml").exists()
    staged = ctx / "_stage" / "jobcloud" / "jobcloud"
    # One namespace in the image too: the root package, its subpackages and the recipes.
    for part in ("__init__.py", "flows/job.py", "blocks/errors.py", "deployments/cli/main.py", "images/images.yaml"):
        assert (staged / part).exists(), part
    assert not (ctx / "_stage" / "jobcloud" / "flows").exists()
    assert not list((ctx / "_stage" / "jobcloud").rglob("__pycache__"))
    assert (ctx / "_stage" / "ca-certificates.crt").exists()


def test_a_missing_wheel_is_said_and_the_index_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    said: list[str] = []
    ib._stage_context(ib.load_recipes()["pytorch-cpu"], tmp_path / "ctx", log=said.append)
    assert any("no local wheel for torch-2.13.0+cpu" in m for m in said)


def _apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> None:
    """Make `debian_mirror` read ``files`` (paths under /etc/apt) from ``tmp_path`` instead."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(ib, "Path", lambda p: tmp_path / str(p).lstrip("/"))


DEB822 = """Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://security.example.org/debian-security
Suites: bookworm-security

Types: deb
URIs: http://mirror.example.org/debian
Suites: bookworm bookworm-updates
"""


def test_debian_mirror_is_read_from_deb822_sources_skipping_security(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _apt(tmp_path, monkeypatch, {"etc/apt/sources.list.d/debian.sources": DEB822})
    assert ib.debian_mirror() == "http://mirror.example.org/debian"


def test_debian_mirror_is_read_from_a_sources_list_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _apt(
        tmp_path,
        monkeypatch,
        {
            "etc/apt/sources.list": "# deb http://commented.example.org/debian bookworm main\n"
            "deb [signed-by=/usr/share/keyrings/debian.gpg] https://list.example.org/debian bookworm main\n",
        },
    )
    assert ib.debian_mirror() == "https://list.example.org/debian"


def test_debian_mirror_without_a_usable_source_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _apt(tmp_path, monkeypatch, {"etc/apt/sources.list": "deb http://security.example.org/debian-security bookworm-security main\n"})
    assert ib.debian_mirror() == ib.DEFAULT_MIRROR
    assert ib.DEFAULT_MIRROR not in ("http://mirror.example.org/debian", "https://list.example.org/debian")


def test_no_engine_is_said_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobcloud.blocks.errors import ContainerEngineError

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(ContainerEngineError, match="no container engine answers at .*scripts/engine.sh"):
        ib.build(["linefit"])

"""What `pip install .` puts into site-packages: the package `jobcloud` and its dist-info, and
nothing else (a Prefect project keeps its own `flows`, `blocks` and `deployments`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_install_puts_only_jobcloud_into_site_packages(tmp_path: Path) -> None:
    wheels, target, src = tmp_path / "wheels", tmp_path / "site-packages", tmp_path / "src"
    # A copy of what the build reads: setuptools writes build/ and *.egg-info into the source.
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("jobcloud", "blocks", "flows", "deployments", "images"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # No build isolation: the build backend of .venv (setuptools) is used, so no index is needed.
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)], check=True, timeout=300)
    (wheel,) = wheels.glob("jobcloud-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=300)
    top = sorted(p.name for p in target.iterdir() if p.name != "bin")
    assert top == ["jobcloud", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"]
    # The subpackages and the image recipes are inside it, and the entry points name them.
    for rel in ("__init__.py", "flows/job.py", "blocks/settings.py", "deployments/cli/main.py", "images/images.yaml"):
        assert (target / "jobcloud" / rel).is_file(), rel
    with zipfile.ZipFile(wheel) as zf:
        entry_points = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt"))).decode()
    assert "jobcloud.deployments.cli.main:main" in entry_points
    assert "jobcloud.deployments.worker.fast_worker" in entry_points

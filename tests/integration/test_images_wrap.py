"""`jobcloud images wrap` on a real engine: a real Python image gets JobCloud in
/opt/jobcloud/venv and nothing else of it changes; images that cannot carry it are refused with
exit 2. The wrap itself (pip installs Prefect from PyPI) takes a few minutes, once per module.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobcloud.deployments.imaging.wrap import WRAPPED_FROM_LABEL, jobcloud_version, python_facts, stage
from jobcloud.deployments.pools.in_container import IN_CONTAINER_LABEL, VENV_PYTHON, probe_in_container, run_throwaway
from tests.conftest import JOBCLOUD

# The wrap (pip installs Prefect and the S3/GCS extras from PyPI) took 3-10 min on 2 busy cores.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

PYTHON = "localhost/jobcloud/python:3.11-bookworm"
BUSYBOX = "localhost/jobcloud/busybox:1"
WRAPPED = "localhost/jobcloud-test/python:3.11-bookworm-jobcloud"
OLD_PYTHON = "localhost/jobcloud-test/old-python:1"
NO_ENSUREPIP = "localhost/jobcloud-test/python-no-ensurepip:1"
# What must not change: everything in the image's config but its labels.
KEPT = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "StopSignal", "Shell")


def _client() -> Any:
    from jobcloud.blocks.engine import docker_client

    return docker_client(timeout=600)


def _remove(client: Any, tag: str) -> None:
    try:
        client.images.remove(tag, force=True)
    except Exception:  # noqa: BLE001 - not there
        pass


def _jobcloud(*args: str, timeout: int = 1500) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*JOBCLOUD, *args], capture_output=True, text=True, timeout=timeout)


def _build(client: Any, tag: str, dockerfile: str, ctx: Path, files: dict[str, str] | None = None) -> None:
    ctx.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (ctx / name).write_text(text)
        (ctx / name).chmod(0o755)
    (ctx / "Dockerfile").write_text(dockerfile)
    client.images.build(path=str(ctx), tag=tag, rm=True, forcerm=True)


@pytest.fixture(scope="module")
def python_image(engine: str) -> str:
    """The Debian Python base, built by `jobcloud images build python` if missing."""
    from jobcloud.deployments.imaging.build import build, has_image

    if not has_image(_client(), PYTHON):
        build(["python"], log=lambda m: None)
    return PYTHON


@pytest.fixture(scope="module")
def wrapped(python_image: str) -> Iterator[dict[str, Any]]:
    """The Python base wrapped by the real command (a fresh build), and what it printed."""
    client = _client()
    _remove(client, WRAPPED)
    proc = _jobcloud("images", "wrap", python_image, "--tag", WRAPPED, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    yield json.loads(proc.stdout)
    _remove(client, WRAPPED)


def test_wrap_builds_the_tag(wrapped: dict[str, Any]) -> None:
    assert wrapped["built"] is True and wrapped["tag"] == WRAPPED and wrapped["python"].startswith("3.11.")


def test_wrapped_image_imports_the_flow_and_prefect(wrapped: dict[str, Any]) -> None:
    code, output = run_throwaway(_client(), WRAPPED, [VENV_PYTHON, "-c", "import jobcloud.flows.job, prefect; print(prefect.__version__)"])
    assert code == 0, output
    assert output.strip().splitlines()[-1] == "3.8.8"


def test_the_application_environment_is_unchanged(wrapped: dict[str, Any]) -> None:
    client = _client()
    before = client.api.inspect_image(PYTHON)["Config"]
    after = client.api.inspect_image(WRAPPED)["Config"]
    # `or None`: the engine may write an absent entrypoint as [] and absent volumes as {}.
    assert {k: before.get(k) or None for k in KEPT} == {k: after.get(k) or None for k in KEPT}
    assert after.get("Env") == before.get("Env") and after.get("Cmd") == before.get("Cmd") == ["python3"]
    # The application's python3 is the same interpreter, and Prefect is not in its packages.
    probe = "import sys, importlib.util as u; print(sys.executable, u.find_spec('prefect') is None, u.find_spec('flows') is None)"
    answers = [run_throwaway(client, image, ["python3", "-c", probe]) for image in (PYTHON, WRAPPED)]
    assert answers[0] == answers[1] == (0, "/usr/bin/python3 True True\n")


def test_the_wrapped_image_is_labelled(wrapped: dict[str, Any]) -> None:
    client = _client()
    labels = client.images.get(WRAPPED).labels
    assert labels[IN_CONTAINER_LABEL] == jobcloud_version()
    assert labels[WRAPPED_FROM_LABEL] == client.images.get(PYTHON).id


def test_probe_tells_wrapped_from_unwrapped(wrapped: dict[str, Any]) -> None:
    client = _client()
    assert probe_in_container(client, WRAPPED) is None
    reason = probe_in_container(client, PYTHON)
    assert reason and "no /opt/jobcloud/venv/bin/python" in reason


def test_a_second_wrap_is_up_to_date(wrapped: dict[str, Any]) -> None:
    proc = _jobcloud("images", "wrap", PYTHON, "--tag", WRAPPED, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["built"] is False
    assert "is up to date" in proc.stderr


def test_wrapping_a_wrapped_image_changes_nothing(wrapped: dict[str, Any]) -> None:
    proc = _jobcloud("images", "wrap", WRAPPED)
    assert proc.returncode == 0, proc.stderr
    assert f"{WRAPPED} already runs in-container" in proc.stdout


def test_check_warns_about_images_that_cannot_run_on_an_in_container_pool(wrapped: dict[str, Any], tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    entry = (
        '      app: {{cmd: ["true"]}}\n      handler:\n        image_url: "{image}"\n'
        "        files_down: {{}}\n        files_up: {{output: output}}\n"
    )
    catalog.write_text(
        "ok:\n  v1:\n    run:\n"
        + entry.format(image=WRAPPED)
        + "raw:\n  v1:\n    run:\n"
        + entry.format(image=PYTHON)
        + "gone:\n  v1:\n    run:\n"
        + entry.format(image="localhost/jobcloud-test/never-built:1")
    )
    env = {**os.environ, "JOBCLOUD_POOL_TYPES": "cpu=docker"}
    proc = subprocess.run([*JOBCLOUD, "check", str(catalog)], capture_output=True, text=True, env=env, timeout=300)
    # An image here that cannot run there is bad input: exit 2, with the fix named.
    assert proc.returncode == 2, proc.stderr
    text = " ".join(proc.stderr.split())
    assert f"jobcloud images wrap {PYTHON}" in text
    assert "never-built:1 (for gone/v1/run (pool cpu, docker)) is not present here; cannot tell" in text
    assert WRAPPED not in text


def test_an_image_without_python_is_refused(images: None) -> None:
    proc = _jobcloud("images", "wrap", BUSYBOX)
    assert proc.returncode == 2
    text = " ".join(proc.stderr.split())
    assert f"cannot wrap {BUSYBOX}: it has no python3 on its PATH" in text and "Traceback" not in proc.stderr


def test_a_python_too_old_is_refused(images: None, tmp_path: Path) -> None:
    # busybox with a `python3` that says it is 3.8: what an old distribution's python answers.
    fake = '#!/bin/sh\necho \'{"version": [3, 8, 10], "executable": "/bin/python3", "venv": true, "ensurepip": true, "jobcloud_venv": false}\'\n'
    client = _client()
    _build(client, OLD_PYTHON, f"FROM {BUSYBOX}\nCOPY python3 /bin/python3\n", tmp_path, {"python3": fake})
    try:
        proc = _jobcloud("images", "wrap", OLD_PYTHON)
    finally:
        _remove(client, OLD_PYTHON)
    assert proc.returncode == 2
    text = " ".join(proc.stderr.split())
    assert "its python3 is Python 3.8.10 (/bin/python3); JobCloud and Prefect need 3.11 or newer" in text


def test_a_python_without_ensurepip_gets_a_venv_with_pip(python_image: str, tmp_path: Path) -> None:
    """Debian's python3 without python3-venv: the venv is made --without-pip and the staged pip
    installs pip into it (from PyPI). Only that step runs here; the full wrap is above."""
    client = _client()
    _build(client, NO_ENSUREPIP, f"FROM {python_image}\nRUN rm -rf /usr/lib/python3.11/ensurepip\n", tmp_path / "ctx")
    try:
        assert python_facts(client, NO_ENSUREPIP).ensurepip is False
        stage(tmp_path / "stage")
        staged = tmp_path / "stage" / "_stage"
        step = "import sys; sys.path.insert(0, '/stage'); import wrap_venv as w; w.make_venv('/stage', w.clean_env('/stage'))"
        container = client.containers.run(
            NO_ENSUREPIP,
            entrypoint=["/bin/sh"],
            command=["-c", f'python3 -I -c "{step}" && {VENV_PYTHON} -m pip --version'],
            volumes={str(staged): {"bind": "/stage", "mode": "ro"}},
            network_mode="host",  # pip reaches PyPI
            detach=True,
        )
        try:
            code = container.wait(timeout=300)["StatusCode"]
            output = container.logs().decode()
        finally:
            container.remove(force=True)
    finally:
        _remove(client, NO_ENSUREPIP)
    assert code == 0, output[-3000:]
    assert "venv with pip failed" in output
    assert "/opt/jobcloud/venv/lib/python3.11/site-packages/pip" in output

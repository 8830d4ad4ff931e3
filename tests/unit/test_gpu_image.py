"""The right image for the device and a GPU request that is honoured or fails: the catalog's
`handler.gpu_image_url`, the image and command a GPU job gets, the GPU check that starts its
command, how each engine is asked for GPUs, and `jobcloud check`'s word on GPU images."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from jobcloud.blocks import engine
from jobcloud.blocks.errors import CatalogError, GpuUnavailableError
from jobcloud.deployments.imaging import gpu_check
from jobcloud.flows.catalog import EntrypointRef, load_catalog, parse_catalog
from jobcloud.flows.container_spec import (
    GPU_CHECK_EXIT,
    ContainerSpec,
    build_spec,
    gpu_checked_command,
    image_for,
    job_gpus,
    shell_command,
)
from jobcloud.flows.definition import entry_data
from jobcloud.flows.request import HardwareOverride, JobRequest

ROOT = Path(__file__).resolve().parent.parent.parent
CATALOG = """
app:
  v1:
    both:
      app: {cmd: ["echo \\"$0\\" 'it ran'"]}
      handler: {image_url: "img:cpu", gpu_image_url: "img:cuda"}
    gpu-only:
      app: {cmd: ["train"]}
      handler: {image_url: "img:1"}
      aws_resources: {hardware: {GPU: 2}}
    gpu-both:
      app: {cmd: ["train"]}
      handler: {image_url: "img:cpu", gpu_image_url: "img:cuda"}
      aws_resources: {hardware: {GPU: 1}}
    cpu:
      app: {cmd: ["fit"]}
      handler: {image_url: "img:1"}
"""


def _entry(name: str) -> Any:
    return parse_catalog(CATALOG).get(EntrypointRef.parse(f"app/v1/{name}"))


def _spec(name: str, gpu: int | None = None) -> ContainerSpec:
    request = JobRequest(hardware=HardwareOverride(gpu=gpu)) if gpu is not None else JobRequest()
    return build_spec(EntrypointRef.parse(f"app/v1/{name}"), _entry(name), request, Path("/w"), "job-1")


# --- the catalog -----------------------------------------------------------------------------


def test_gpu_image_url_is_an_optional_extension() -> None:
    assert _entry("both").handler.gpu_image_url == "img:cuda"
    assert _entry("cpu").handler.gpu_image_url is None
    # DECODE's own catalog stays valid, and its definition (deployments, fingerprints) has no new key.
    decode = load_catalog(ROOT / "tests/data/decode_catalog.yaml").get(EntrypointRef.parse("decode/v0_10_1/train"))
    assert decode.handler.gpu_image_url is None and "gpu_image_url" not in entry_data(decode)["handler"]
    with pytest.raises(CatalogError) as exc:
        parse_catalog(CATALOG.replace('gpu_image_url: "img:cuda"}', 'gpu_image_url: ""}', 1))
    assert any(p.startswith("app.v1.both.handler.gpu_image_url:") for p in exc.value.problems)


def test_torchfit_train_names_its_cuda_build() -> None:
    catalog = load_catalog(ROOT / "application_config.yaml")
    train = catalog.get(EntrypointRef.parse("torchfit/v1/train"))
    assert train.handler.image_url == "localhost/jobcloud/torchfit:1"
    assert train.handler.gpu_image_url == "localhost/jobcloud/torchfit-cuda:1"
    assert train.pool == "cpu"  # GPU: 0 in the catalog: it still runs anywhere
    assert catalog.get(EntrypointRef.parse("torchfit/v1/predict")).handler.gpu_image_url is None


# --- the image and command of a job -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "gpu", "gpus", "image"),
    [
        ("both", None, 0, "img:cpu"),
        ("both", 0, 0, "img:cpu"),
        ("both", 1, 1, "img:cuda"),  # a job's --gpu 1 picks the GPU image
        ("gpu-both", None, 1, "img:cuda"),  # so does the catalog's GPU
        ("gpu-both", 0, 0, "img:cpu"),  # and --gpu 0 the CPU one
        ("gpu-only", None, 2, "img:1"),  # no GPU image named: image_url everywhere
        ("cpu", 3, 3, "img:1"),
    ],
)
def test_the_image_follows_the_gpus_the_job_gets(name: str, gpu: int | None, gpus: int, image: str) -> None:
    entry = _entry(name)
    request = JobRequest(hardware=HardwareOverride(gpu=gpu)) if gpu is not None else JobRequest()
    assert job_gpus(entry, request) == gpus
    assert image_for(entry, gpus) == image
    spec = _spec(name, gpu)
    assert spec.image == image and spec.gpus == gpus
    if gpus == 0:
        assert spec.command == shell_command(entry)
    else:
        assert spec.command[:2] == ["/bin/sh", "-c"] and spec.command[-1] == shell_command(entry)[-1]
        assert f"-lt {gpus} ]" in spec.command[2] and f"exit {GPU_CHECK_EXIT}" in spec.command[2]


def test_the_app_text_never_enters_the_check() -> None:
    spec = _spec("both", gpu=1)
    text = shell_command(_entry("both"))[-1]
    assert text not in spec.command[2]  # it is an argument ($1), run as `exec /bin/sh -c "$1"`
    assert spec.command[3:] == ["jobcloud-gpu-check", text]


def _run(command: list[str], path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path} if path else None
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=30, check=False)


def test_the_check_refuses_a_container_that_sees_too_few_gpus() -> None:
    # No machine has 99 GPUs: the check fails before the app's text runs.
    proc = _run(gpu_checked_command(["/bin/sh", "-c", "echo APP-RAN"], 99))
    assert proc.returncode == GPU_CHECK_EXIT
    assert "APP-RAN" not in proc.stdout
    assert proc.stderr.startswith("[jobcloud] the job asks for 99 GPU(s) but its container sees ")
    assert "rather than running it on the CPU" in proc.stderr and "--gpu 0" in proc.stderr


def test_the_check_lets_the_app_run_unchanged_when_the_gpus_are_there(tmp_path: Path) -> None:
    # Where device nodes are missing (WSL2), `nvidia-smi -L` is asked; here a stand-in lists 2.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\necho 'GPU 0: Fake (UUID: GPU-a)'\necho '  MIG 1g.10gb Device 0: (UUID: MIG-x)'\necho 'GPU 1: Fake (UUID: GPU-b)'\n"
    )
    smi.chmod(0o755)
    text = "echo \"$0\" $# 'quoted $HOME'; exit 3"
    path = f"{bin_dir}:/usr/bin:/bin"
    proc = _run(gpu_checked_command(["/bin/sh", "-c", text], 2), path)
    assert (proc.returncode, proc.stdout) == (3, "/bin/sh 0 quoted $HOME\n")  # exactly as `sh -c TEXT`
    assert _run(["/bin/sh", "-c", text]).stdout == proc.stdout
    assert _run(gpu_checked_command(["/bin/sh", "-c", text], 3), path).returncode == GPU_CHECK_EXIT


def test_no_gpus_no_check() -> None:
    assert gpu_checked_command(["/bin/sh", "-c", "x"], 0) == ["/bin/sh", "-c", "x"]


# --- how each engine is asked -------------------------------------------------------------------

DOCKER_VERSION = {"Components": [{"Name": "Engine", "Version": "29.0.0"}]}
PODMAN_VERSION = {"Components": [{"Name": "Podman Engine", "Version": "4.3.1"}]}
NVIDIA_RUNTIME = {"Runtimes": {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}}
FOUR_GPUS = tuple(f"nvidia.com/gpu={n}" for n in ("all", "3", "GPU-c", "1", "0", "2", "GPU-a"))


@pytest.fixture(autouse=True)
def _no_engine_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("JOBCLOUD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("JOBCLOUD_ASSUME_GPU", raising=False)
    engine._gpu_support.clear()
    gpu_check._known.clear()
    yield
    engine._gpu_support.clear()
    gpu_check._known.clear()


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_docker_gets_a_device_request_for_n_gpus(gpus: int) -> None:
    support = engine.decide_gpu_support(NVIDIA_RUNTIME, DOCKER_VERSION, local=True, cdi_spec=False)
    kwargs = ContainerSpec(image="i", command=["x"], host_files="/w", gpus=gpus).create_kwargs(support.create_kwargs(gpus))
    assert kwargs["device_requests"] == [{"Driver": "", "Count": gpus, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}]
    assert "devices" not in kwargs


@pytest.mark.parametrize(
    ("gpus", "devices"),
    [(1, ["nvidia.com/gpu=0"]), (2, ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]), (4, [f"nvidia.com/gpu={n}" for n in range(4)])],
)
def test_podman_gets_n_cdi_devices_by_index(gpus: int, devices: list[str]) -> None:
    support = engine.decide_gpu_support({}, PODMAN_VERSION, local=True, cdi_spec=True, local_ids=FOUR_GPUS)
    assert support.method == "cdi-device" and support.gpu_ids == tuple(f"nvidia.com/gpu={n}" for n in range(4))
    kwargs = ContainerSpec(image="i", command=["x"], host_files="/w", gpus=gpus).create_kwargs(support.create_kwargs(gpus))
    assert kwargs["devices"] == devices and "device_requests" not in kwargs  # Podman ignores those


def test_podman_without_known_names_gets_all_and_a_short_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    support = engine.decide_gpu_support({}, PODMAN_VERSION, local=True, cdi_spec=True)
    assert support.create_kwargs(2) == {"devices": ["nvidia.com/gpu=all"]}
    uuid_only = ("nvidia.com/gpu=GPU-a", "nvidia.com/gpu=all")
    support = engine.decide_gpu_support({}, PODMAN_VERSION, local=True, cdi_spec=True, local_ids=uuid_only)
    assert support.create_kwargs(1) == {"devices": ["nvidia.com/gpu=GPU-a"]}

    class Client:
        jobcloud_url = "unix:///podman.sock"

        def info(self) -> dict:
            return {}

        def version(self) -> dict:
            return PODMAN_VERSION

    monkeypatch.setattr(engine, "local_cdi_gpu_spec", lambda *a: True)
    monkeypatch.setattr(engine, "local_cdi_gpu_ids", lambda *a: ("nvidia.com/gpu=0", "nvidia.com/gpu=all"))
    assert engine.require_gpus(Client(), 1).create_kwargs(1) == {"devices": ["nvidia.com/gpu=0"]}
    with pytest.raises(GpuUnavailableError, match=r"asks for 2 GPU\(s\) but .* offers only 1; pass --gpu 1"):
        engine.require_gpus(Client(), 2)
    monkeypatch.setenv("JOBCLOUD_ASSUME_GPU", "1")  # the operator knows better: all, then the check
    assert engine.require_gpus(Client(), 2).create_kwargs(2) == {"devices": ["nvidia.com/gpu=all"]}


def test_docker_cdi_counts_gpus_not_names() -> None:
    # A spec that names each GPU by index and by UUID lists one GPU twice: two names, one GPU.
    info = {"DiscoveredDevices": [{"Source": "cdi", "ID": i} for i in ("nvidia.com/gpu=0", "nvidia.com/gpu=GPU-a", "nvidia.com/gpu=all")]}
    support = engine.decide_gpu_support(info, DOCKER_VERSION, local=False, cdi_spec=False)
    assert support.gpu_ids == ("nvidia.com/gpu=0",)
    assert support.create_kwargs(1)["device_requests"][0]["DeviceIDs"] == ["nvidia.com/gpu=0"]


def test_local_cdi_ids_are_read_from_yaml_and_json_specs(tmp_path: Path) -> None:
    a, b = tmp_path / "etc", tmp_path / "run"
    a.mkdir(), b.mkdir()
    (a / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: '0'\n  containerEdits: {}\n- name: all\n")
    (b / "more.json").write_text(json.dumps({"kind": "nvidia.com/gpu", "devices": [{"name": "1"}, {"name": "0"}]}))
    (b / "fpga.yaml").write_text("kind: vendor.com/fpga\ndevices: [{name: '0'}]\n")
    (b / "broken.yaml").write_text("kind: [unclosed\n")
    assert engine.local_cdi_gpu_ids((str(a), str(b), str(tmp_path / "none"))) == (
        "nvidia.com/gpu=0",
        "nvidia.com/gpu=all",
        "nvidia.com/gpu=1",
    )


# --- jobcloud check: is the GPU image CUDA-capable? -------------------------------------------


def test_gpu_image_uses_lists_the_image_a_gpu_job_runs() -> None:
    assert gpu_check.gpu_image_uses(parse_catalog(CATALOG)) == {
        "img:cuda": ["app/v1/both (gpu_image_url)", "app/v1/gpu-both (gpu_image_url)"],
        "img:1": ["app/v1/gpu-only (GPU: 2)"],
    }


@pytest.mark.parametrize(
    ("labels", "capable"),
    [({"io.jobcloud.cuda": "13.0"}, True), ({"io.jobcloud.cuda": "none"}, False), ({"io.jobcloud.cuda": ""}, False), ({}, None)],
)
def test_an_image_may_say_itself(labels: dict, capable: bool | None) -> None:
    verdict = gpu_check.verdict_from_label(labels)
    assert (verdict.capable if verdict else None) is capable


MARK = gpu_check.PROBE_MARK


@pytest.mark.parametrize(
    ("code", "output", "env", "capable", "how"),
    [
        (
            0,
            f'UserWarning: no driver\n{MARK}{{"python": true, "torch": "2.13.0+cu130", "cuda": "13.0"}}\n',
            [],
            True,
            "built for CUDA 13.0",
        ),
        (0, f'{MARK}{{"python": true, "torch": "2.13.0+cpu", "cuda": null}}\n', ["NVIDIA_VISIBLE_DEVICES=all"], False, "CPU-only build"),
        (0, f'{MARK}{{"python": true, "torch": null}}\n', ["CUDA_VERSION=12.4.1"], True, "CUDA_VERSION=12.4.1"),
        (0, f'{MARK}{{"python": false}}\n', ["PATH=/bin"], False, "no Python"),
        (127, "exec: /bin/sh: not found", [], False, "no /bin/sh"),
        (124, "no answer within 120 s", [], None, "the probe failed (exit 124)"),
    ],
)
def test_the_probe_answer(code: int, output: str, env: list[str], capable: bool | None, how: str) -> None:
    verdict = gpu_check.verdict_from_probe(code, output, env)
    assert verdict.capable is capable and how in verdict.how


class _Image:
    def __init__(self, image_id: str, labels: dict | None = None, env: list[str] | None = None) -> None:
        self.id, self.labels = image_id, labels or {}
        self.attrs = {"Config": {"Labels": labels, "Env": env or []}}


class _Images:
    def __init__(self, known: dict[str, _Image]) -> None:
        self.known = known

    def get(self, name: str) -> _Image:
        if name not in self.known:
            raise docker.errors.ImageNotFound(name)
        return self.known[name]


class _Client:
    def __init__(self, known: dict[str, _Image]) -> None:
        self.images = _Images(known)


def test_findings_warn_about_cpu_images_and_note_what_cannot_be_told(monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[str] = []

    def probe(client: Any, image: str, argv: list[str], timeout: int = 0) -> tuple[int, str]:
        probes.append(image)
        return 0, f'{MARK}{{"python": true, "torch": "2.13.0+cpu", "cuda": null}}\n'

    monkeypatch.setattr(gpu_check, "run_throwaway", probe)
    client = _Client({"img:cuda": _Image("sha256:cpu-torch")})  # img:1 is not here
    findings = gpu_check.gpu_image_findings(parse_catalog(CATALOG), client)
    assert findings == [
        (
            "warning",
            (
                "img:cuda, what app/v1/both (gpu_image_url); app/v1/gpu-both (gpu_image_url) run when a job "
                "gets GPUs, is not CUDA-capable (its PyTorch 2.13.0+cpu is a CPU-only build): such a job would "
                "hold GPUs it cannot use. Name a CUDA build in handler.gpu_image_url (or label a CUDA image "
                "io.jobcloud.cuda=<version>)"
            ),
        ),
        ("note", "img:1 (for app/v1/gpu-only (GPU: 2)) is not present here; cannot tell whether it is CUDA-capable"),
    ]
    # Remembered per image id, across processes too (the file): no second probe.
    gpu_check._known.clear()
    assert gpu_check.cuda_verdict(client, "img:cuda").capable is False
    assert probes == ["img:cuda"]
    cache = json.loads((Path(os.environ["JOBCLOUD_HOME"]) / "cuda-images.json").read_text())
    assert cache == {"sha256:cpu-torch": {"capable": False, "how": "its PyTorch 2.13.0+cpu is a CPU-only build"}}
    # A label answers without a probe; a CUDA-capable image says nothing.
    labelled = _Client(
        {"img:cuda": _Image("sha256:l", {"io.jobcloud.cuda": "12.4"}), "img:1": _Image("sha256:m", {"io.jobcloud.cuda": "13.0"})}
    )
    assert gpu_check.gpu_image_findings(parse_catalog(CATALOG), labelled) == []
    assert probes == ["img:cuda"]


def test_a_failed_probe_is_a_note_and_is_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_check, "run_throwaway", lambda *a, **k: (124, "no answer within 120 s"))
    client = _Client({"img:1": _Image("sha256:slow")})
    catalog = parse_catalog(CATALOG.split("    gpu-both:")[0].replace('gpu_image_url: "img:cuda"', 'gpu_image_url: "img:1"'))
    (finding,) = gpu_check.gpu_image_findings(catalog, client)
    assert finding[0] == "note" and "cannot tell whether img:1" in finding[1] and "exit 124" in finding[1]
    assert "sha256:slow" not in gpu_check._known


def test_check_without_an_engine_notes_it_cannot_tell(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from jobcloud.deployments.cli.main import main

    (tmp_path / "c.yaml").write_text(CATALOG)
    monkeypatch.delenv("JOBCLOUD_POOL_TYPES", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/engine.sock")
    assert main(["check", str(tmp_path / "c.yaml")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "note: no container engine answers here" in err and "cannot tell whether img:cuda, img:1 are CUDA-capable" in err


def test_a_catalog_without_gpu_entrypoints_never_asks_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = parse_catalog(CATALOG.split("    both:")[0] + "    cpu:\n      app: {cmd: [fit]}\n      handler: {image_url: img:1}\n")
    assert gpu_check.gpu_image_findings(catalog, client=object()) == []

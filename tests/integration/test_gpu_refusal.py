"""A GPU request is honoured or the job fails, on the real engine of this machine (no GPU).

The host-level refusal (`jobcloud.blocks.engine.require_gpus`) is passed on purpose here, as it is in
the field when a probe is wrong or skipped (`JOBCLOUD_ASSUME_GPU=1`): the engine is taken for
Docker with the nvidia runtime, so the container is created with a real
`DeviceRequest(count=N, capabilities=[["gpu"]])`, which Podman's Docker API accepts and
ignores. What stops the job is then its own GPU check (jobcloud.flows.container_spec), at once, with a
message that says why, before the application's command runs: never a quiet run on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobcloud.blocks import engine
from jobcloud.blocks.engine import GpuSupport, docker_client, gpu_support
from jobcloud.blocks.errors import ContainerEngineError
from jobcloud.flows import container_run
from jobcloud.flows.catalog import EntrypointRef, parse_catalog
from jobcloud.flows.container_run import run_container
from jobcloud.flows.container_spec import GPU_CHECK_EXIT, build_spec
from jobcloud.flows.request import HardwareOverride, JobRequest
from tests.engine_helpers import labelled_containers

pytestmark = pytest.mark.integration

BUSYBOX = "localhost/jobcloud/busybox:1"
LINEFIT = "localhost/jobcloud/linefit:1"
# The CPU image is linefit, the GPU image busybox: which one ran shows in the manifest's image id.
CATALOG = f"""
gpuapp:
  v1:
    train:
      app: {{cmd: ["echo APP-RAN-ON-THE-CPU; mkdir -p /files/log; echo trained > /files/log/app.log"]}}
      handler:
        image_url: "{LINEFIT}"
        gpu_image_url: "{BUSYBOX}"
        files_up: {{log: log}}
      aws_resources: {{hardware: {{GPU: 1}}, timeout: 60}}
"""
REF = EntrypointRef.parse("gpuapp/v1/train")


@pytest.fixture
def no_gpu_engine(engine: str, images: None) -> str:
    """The real engine; these tests mean one that cannot give GPUs."""
    if gpu_support(docker_client()).available:
        pytest.skip("this engine can give GPUs")
    return engine


def _misprobed(client, gpus: int) -> GpuSupport:
    # What a wrong probe answers: "Docker with the nvidia runtime" -> a plain DeviceRequest.
    return GpuSupport("Docker", "runtime")


def _spec(tmp_path: Path, gpus: int):
    entry = parse_catalog(CATALOG).get(REF)
    request = JobRequest(hardware=HardwareOverride(gpu=gpus))
    return build_spec(REF, entry, request, tmp_path, f"gpu-refusal-{tmp_path.name}")


def _left(spec) -> list:
    return labelled_containers(None, f"io.jobcloud.job-id={spec.labels['io.jobcloud.job-id']}")


def test_an_ignored_gpu_request_fails_at_once_before_the_app_runs(
    no_gpu_engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(container_run, "require_gpus", _misprobed)
    client = docker_client()
    spec = _spec(tmp_path, 2)
    assert spec.image == BUSYBOX  # the job gets GPUs: the GPU image
    assert spec.create_kwargs(_misprobed(client, 2).create_kwargs(2))["device_requests"][0]["Count"] == 2
    lines: list[str] = []
    outcome = run_container(client, spec, lines.append)
    assert outcome.exit_code == GPU_CHECK_EXIT, lines
    # At once, not at the 60 s timeout (measured from the start: creating can be slow on a busy host).
    assert not outcome.timed_out and outcome.ended_at - outcome.started_at < 30
    assert lines[0].startswith("[jobcloud] the job asks for 2 GPU(s) but its container sees 0 (/dev/nvidia<N>)")
    assert "rather than running it on the CPU" in lines[0]
    assert not any("APP-RAN-ON-THE-CPU" in line for line in lines)
    assert not (tmp_path / "log" / "app.log").exists()
    assert outcome.image_id and client.images.get(BUSYBOX).id.endswith(outcome.image_id.removeprefix("sha256:"))
    assert _left(spec) == []


def test_the_check_counts_the_gpu_devices_a_real_container_sees(
    no_gpu_engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /dev/null as /dev/nvidia0: a container that sees one GPU device node, as CDI or the nvidia
    # runtime would add it. One GPU asked: the app runs, unchanged. Two: refused.
    one_node = GpuSupport("test", "runtime")
    monkeypatch.setattr(GpuSupport, "create_kwargs", lambda self, gpus: {"devices": ["/dev/null:/dev/nvidia0:rwm"]})
    monkeypatch.setattr(container_run, "require_gpus", lambda client, gpus: one_node)
    client = docker_client()
    lines: list[str] = []
    outcome = run_container(client, _spec(tmp_path / "one", 1), lines.append)
    assert outcome.exit_code == 0 and lines == ["APP-RAN-ON-THE-CPU"]
    lines.clear()
    outcome = run_container(client, _spec(tmp_path / "two", 2), lines.append)
    assert outcome.exit_code == GPU_CHECK_EXIT
    assert lines[0].startswith("[jobcloud] the job asks for 2 GPU(s) but its container sees 1 ")


def test_assume_gpu_on_podman_without_cdi_is_refused_at_create(no_gpu_engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = docker_client()
    if not engine.is_podman(client.version()):
        pytest.skip("Podman's CDI path")
    monkeypatch.setenv("JOBCLOUD_ASSUME_GPU", "1")  # skips the probe's refusal: the CDI device is sent
    spec = _spec(tmp_path, 1)
    with pytest.raises(ContainerEngineError, match=r"refused to create the container: .*nvidia\.com/gpu=all"):
        run_container(client, spec, lambda line: None)
    assert _left(spec) == []


def test_a_gpu_job_fails_with_the_reason_and_its_manifest_names_the_gpu_image(
    no_gpu_engine: str, prefect_api: str, jc_env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole job, in this process: Failed at once, the check's words in its message, the
    GPU image and the id that ran in its manifest, the log uploaded."""
    from jobcloud.blocks.store.factory import store_from_settings
    from jobcloud.deployments.jobs import run_local as run_local_module

    monkeypatch.setattr(container_run, "require_gpus", _misprobed)
    monkeypatch.setattr(run_local_module, "require_gpus", _misprobed)
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG)
    monkeypatch.setenv("JOBCLOUD_CONFIG", str(catalog))
    entry = parse_catalog(CATALOG).get(REF)
    result = run_local_module.run_local(REF, entry, JobRequest(), store_from_settings())
    manifest = result.manifest
    assert result.state == "Failed" and manifest is not None, result
    assert manifest["exit_code"] == GPU_CHECK_EXIT and manifest["attempts"] == 1 and not manifest["timed_out"]
    assert manifest["image"] == BUSYBOX and manifest["hardware"]["gpu"] == 1
    image_id = manifest["image_id"] or ""
    assert image_id and docker_client().images.get(BUSYBOX).id.endswith(image_id.removeprefix("sha256:"))
    assert "the job asks for 1 GPU(s) but its container sees 0" in (manifest["message"] or "")
    assert "the job asks for 1 GPU(s)" in (result.message or "")
    log = store_from_settings().read_bytes(f"jobs/{manifest['job_id']}/log/container.log").decode()
    assert "rather than running it on the CPU" in log and "APP-RAN-ON-THE-CPU" not in log

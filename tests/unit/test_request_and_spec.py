"""Job parameters against an entrypoint: env allow-list, inputs, overrides, the container spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobcloud.blocks.errors import ParameterError, UnsafeKeyError
from jobcloud.flows.catalog import EntrypointRef, load_catalog
from jobcloud.flows.container_spec import build_spec, shell_command
from jobcloud.flows.request import HardwareOverride, JobRequest, validate_request

ROOT = Path(__file__).resolve().parent.parent.parent
REF = EntrypointRef.parse("linefit/v1/train")


@pytest.fixture
def entry():
    return load_catalog(ROOT / "application_config.yaml").get(REF)


INPUTS = {"config_id": "config/a.yaml", "data_ids": ["data/exp1"]}  # linefit/train requires both


def test_allowed_env_passes_and_others_are_refused(entry) -> None:
    ok = validate_request(entry, JobRequest(env={"LINEFIT_EPOCHS": "3"}, **INPUTS))
    assert ok.env == {"LINEFIT_EPOCHS": "3"}
    with pytest.raises(ParameterError) as exc:
        validate_request(entry, JobRequest(env={"LINEFIT_EPOCHS": "3", "LD_PRELOAD": "/x.so"}))
    assert "LD_PRELOAD" in str(exc.value) and "allowed: LINEFIT_EPOCHS" in str(exc.value)


def test_env_values_never_enter_the_command(entry) -> None:
    evil = "$(touch /files/pwned); `id`"
    req = validate_request(entry, JobRequest(env={"LINEFIT_EPOCHS": evil}, **INPUTS))
    spec = build_spec(REF, entry, req, Path("/tmp/x"), "job-1")
    assert evil not in " ".join(spec.command)
    assert spec.environment == {"LINEFIT_EPOCHS": evil}


def test_command_is_joined_and_run_by_sh(entry) -> None:
    cmd = shell_command(entry)
    assert cmd[:2] == ["/bin/sh", "-c"]
    assert cmd[2] == " ".join(entry.app.cmd)


@pytest.mark.parametrize("key", ["../etc/passwd", "/etc/passwd", "data/../../x", "a//b", "a\\b", "a\x00b", "data/%2e%2e/x"])
def test_unsafe_input_keys_are_refused(entry, key: str) -> None:
    with pytest.raises(UnsafeKeyError):
        validate_request(entry, JobRequest(data_ids=[key]))


def test_two_inputs_with_the_same_last_name_are_refused(entry) -> None:
    with pytest.raises(ParameterError) as exc:
        validate_request(entry, JobRequest(data_ids=["a/exp", "b/exp"]))
    assert "/files/data/exp" in str(exc.value)


def test_input_kind_without_folder_is_refused() -> None:
    predict = load_catalog(ROOT / "application_config.yaml").get(EntrypointRef.parse("linefit/v1/predict"))
    with pytest.raises(ParameterError) as exc:
        validate_request(predict, JobRequest(config_id="config/a.yaml"))
    assert "config_id" in str(exc.value)


def test_hardware_from_catalog_and_overrides(entry) -> None:
    spec = build_spec(REF, entry, JobRequest(), Path("/tmp/x"), "job-1")
    assert spec.nano_cpus == 1_000_000_000
    assert spec.mem_limit_bytes == 256 * 1024 * 1024
    assert spec.gpus == 0 and "device_requests" not in spec.create_kwargs()
    assert spec.timeout == 600
    req = JobRequest(hardware=HardwareOverride(cpu=0.5, memory=512, gpu=2), timeout=30)
    spec = build_spec(REF, entry, req, Path("/tmp/x"), "job-1")
    assert spec.nano_cpus == 500_000_000
    assert spec.mem_limit_bytes == 512 * 1024 * 1024
    assert spec.timeout == 30
    (dr,) = spec.create_kwargs()["device_requests"]
    assert dr["Count"] == 2 and dr["Capabilities"] == [["gpu"]]


def test_gpu_from_catalog_becomes_a_device_request() -> None:
    catalog = load_catalog(ROOT / "tests/data/decode_catalog.yaml")
    ref = EntrypointRef.parse("decode/v0_10_1/train")
    spec = build_spec(ref, catalog.get(ref), JobRequest(), Path("/w"), "j")
    kwargs = spec.create_kwargs()
    assert kwargs["device_requests"][0]["Count"] == 1
    assert kwargs["volumes"] == {"/w": {"bind": "/files", "mode": "rw"}}
    assert kwargs["labels"]["io.jobcloud.flow-run-id"] == "j"
    assert "ALL" in kwargs["cap_drop"] and "no-new-privileges" in kwargs["security_opt"]


def test_tiny_memory_override_is_refused(entry) -> None:
    with pytest.raises(ParameterError):
        validate_request(entry, JobRequest(hardware=HardwareOverride(memory=1)))

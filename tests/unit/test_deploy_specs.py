"""Deployment specs from a catalog: names, pools, tags, typed and described parameter forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobcloud.deployments.deploy.sync import MANAGED_TAG, catalog_deployments
from jobcloud.flows.catalog import EntrypointRef, parse_catalog
from jobcloud.flows.catalog_flows import attribute_name, entrypoint_of, ref_of_attribute

CATALOG = """
decode:
  v0.10.1:
    train:
      description: Train DECODE on a GPU.
      app: {cmd: ["train", "--x"], env: [SEED]}
      handler:
        image_url: localhost/decode:1
        files_down: {config_id: config, data_ids: data}
        files_up: {output: output}
      aws_resources: {hardware: {MEMORY: 1024, VCPU: 2, GPU: 2}, timeout: 60}
    fit:
      app: {cmd: ["fit"]}
      handler: {image_url: localhost/decode:1}
"""


@pytest.fixture
def catalog_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    monkeypatch.setenv("JOBCLOUD_CONFIG", str(path))
    return path


def test_one_deployment_per_entrypoint_on_the_right_pool(catalog_file: Path) -> None:
    specs = {s.full_name: s for s in catalog_deployments(parse_catalog(CATALOG))}
    assert set(specs) == {"decode-train/decode-v0.10.1-train", "decode-fit/decode-v0.10.1-fit"}
    train, fit = specs["decode-train/decode-v0.10.1-train"], specs["decode-fit/decode-v0.10.1-fit"]
    assert train.name == "decode-v0.10.1-train" and train.flow_name == "decode-train"
    assert train.work_pool_name == "gpu" and fit.work_pool_name == "cpu"
    assert train.description == "Train DECODE on a GPU."
    assert fit.description  # a default description when the catalog has none
    assert train.tags == [MANAGED_TAG, "app:decode", "version:v0.10.1", "entrypoint:train"]
    assert train.work_queue_name == "priority-0"
    # The GPU request is the form's default for hardware (the flow's), not a fixed parameter.
    assert train.parameters == {} and fit.parameters == {}
    assert train.parameter_openapi_schema["properties"]["hardware"]["default"] == {"cpu": 2.0, "memory": 1024, "gpu": 2}


def test_parameter_form_is_typed_and_every_field_described(catalog_file: Path) -> None:
    spec = catalog_deployments(parse_catalog(CATALOG))[0]
    schema = spec.parameter_openapi_schema
    props = schema["properties"]
    # Only what decode/train takes: no artifact_ids (no files_down folder), no secrets (none declared).
    assert list(props) == ["config_id", "data_ids", "env", "hardware", "timeout", "callback_url", "array"]
    for name, prop in props.items():
        assert prop.get("description"), f"{name} has no description"
    assert props["config_id"]["type"] == "string"
    assert props["data_ids"]["type"] == "array" and props["data_ids"]["items"] == {"type": "string"}
    assert props["timeout"]["type"] == "integer" and props["timeout"]["default"] == 60
    assert "SEED" in props["env"]["description"]  # the allow-list is shown in the form
    assert props["hardware"]["type"] == "object"
    hardware = props["hardware"]["properties"]
    assert set(hardware) == {"cpu", "memory", "gpu"}
    assert all(p.get("description") for p in hardware.values())


def test_entrypoint_loads_the_flow_prefect_runs(catalog_file: Path) -> None:
    from prefect.flows import load_flow_from_entrypoint

    ref = EntrypointRef(application="decode", version="v0.10.1", entrypoint="train")
    assert "." not in attribute_name(ref)  # Prefect splits object paths on dots
    assert ref_of_attribute(attribute_name(ref)) == ref
    flow = load_flow_from_entrypoint(entrypoint_of(ref))
    assert flow.name == "decode-train"
    assert flow.version == "v0.10.1"


def test_unknown_entrypoint_is_a_missing_flow(catalog_file: Path) -> None:
    from prefect.exceptions import MissingFlowError
    from prefect.flows import load_flow_from_entrypoint

    with pytest.raises(MissingFlowError):
        load_flow_from_entrypoint("jobcloud.flows.catalog_flows.decode/v9/train")

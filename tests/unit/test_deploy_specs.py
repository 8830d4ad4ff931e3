"""Deployment specs from a catalog: names, pools, tags, typed and described parameter forms."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.server.deploy import MANAGED_TAG, catalog_deployments
from flows.catalog import EntrypointRef, parse_catalog
from flows.catalog_flows import attribute_name, entrypoint_of, ref_of_attribute

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
    assert set(specs) == {"decode-train/v0.10.1", "decode-fit/v0.10.1"}
    train, fit = specs["decode-train/v0.10.1"], specs["decode-fit/v0.10.1"]
    assert train.work_pool_name == "gpu" and fit.work_pool_name == "cpu"
    assert train.description == "Train DECODE on a GPU."
    assert fit.description  # a default description when the catalog has none
    assert train.tags == [MANAGED_TAG, "app:decode", "version:v0.10.1", "entrypoint:train"]
    assert train.work_queue_name == "priority-0"
    assert train.parameters == {"hardware": {"gpu": 2}}
    assert fit.parameters == {}


def test_parameter_form_is_typed_and_every_field_described(catalog_file: Path) -> None:
    spec = catalog_deployments(parse_catalog(CATALOG))[0]
    schema = spec.parameter_openapi_schema
    props = schema["properties"]
    assert list(props) == ["config_id", "data_ids", "artifact_ids", "env", "secrets", "hardware", "timeout"]
    for name, prop in props.items():
        assert prop.get("description"), f"{name} has no description"
    assert {"type": "string"} in props["config_id"]["anyOf"]
    assert any(a.get("type") == "array" and a["items"] == {"type": "string"} for a in props["data_ids"]["anyOf"])
    assert any(a.get("type") == "integer" for a in props["timeout"]["anyOf"])
    assert "SEED" in props["env"]["description"]  # the allow-list is shown in the form
    hardware = schema["definitions"]["HardwareOverride"]["properties"]
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
        load_flow_from_entrypoint("flows.catalog_flows.decode/v9/train")

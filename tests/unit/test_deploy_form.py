"""The run form of each deployment, as the Prefect UI gets it (the parameter schema `jobcloud
deploy` and `prefect deploy` store): only the inputs the entrypoint takes, the required ones
required, each field typed and with a default, descriptions a person can read. And the names:
the same parameters from the command line, `prefect deployment run --param` and the Python API;
deployments named for what they are, the old names pruned."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from jobcloud.blocks.errors import CatalogError, ParameterError
from jobcloud.deployments.deploy.sync import catalog_deployments
from jobcloud.deployments.jobs.submit import parameters_of
from jobcloud.flows.catalog import EntrypointRef, load_catalog, parse_catalog
from jobcloud.flows.catalog_flows import flow_for
from jobcloud.flows.request import JobRequest, request_from_parameters, validate_request

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "application_config.yaml")

# What each example entrypoint's form offers, in order, and which of it is required.
FORMS = {
    "linefit/v1/train": (
        ["config_id", "data_ids", "artifact_ids", "env", "hardware", "timeout", "callback_url", "array"],
        ["config_id", "data_ids"],
    ),
    "linefit/v1/predict": (["data_ids", "artifact_ids", "hardware", "timeout", "callback_url", "array"], ["data_ids", "artifact_ids"]),
    "torchfit/v1/train": (["config_id", "data_ids", "env", "hardware", "timeout", "callback_url", "array"], ["config_id", "data_ids"]),
    "torchfit/v1/predict": (["data_ids", "artifact_ids", "hardware", "timeout", "callback_url", "array"], ["data_ids", "artifact_ids"]),
}


def _schema(entrypoint: str) -> dict[str, Any]:
    spec = next(s for s in catalog_deployments(CATALOG) if str(s.ref) == entrypoint)
    return spec.parameter_openapi_schema


def _texts(schema: dict[str, Any]) -> list[str]:
    """Every description in the schema, the nested fields' too."""
    out = []
    for prop in schema["properties"].values():
        out.append(prop.get("description", ""))
        out += [p.get("description", "") for p in prop.get("properties", {}).values()]
    return out


@pytest.mark.parametrize("entrypoint", sorted(FORMS))
def test_form_offers_only_what_the_entrypoint_takes_and_requires_what_it_needs(entrypoint: str) -> None:
    schema = _schema(entrypoint)
    fields, required = FORMS[entrypoint]
    assert list(schema["properties"]) == fields
    assert sorted(schema.get("required", [])) == sorted(required)
    # The deployment's schema is Prefect's own for the flow (what `prefect deploy` stores too).
    flow = flow_for(EntrypointRef.parse(entrypoint), CATALOG)
    assert flow.parameters.model_dump(mode="json", exclude_unset=True) == schema


@pytest.mark.parametrize("entrypoint", sorted(FORMS))
def test_every_field_is_an_input_box_with_a_type_and_a_default(entrypoint: str) -> None:
    schema = _schema(entrypoint)
    entry = CATALOG.get(EntrypointRef.parse(entrypoint))
    hw = entry.hardware.limits
    required = set(schema.get("required", []))
    for name, prop in schema["properties"].items():
        # No `anyOf [..., null]`: the UI would open the field as "None" with a type switch.
        # A plain `type` (no $ref): the deployment's Parameters tab shows it.
        assert "anyOf" not in prop and "$ref" not in prop, (name, prop)
        assert prop.get("type"), (name, prop)
        if name in required:
            assert "default" not in prop
            assert prop.get("minItems", 1) == 1 or prop.get("minLength") == 1
        else:
            assert "default" in prop and prop["default"] is not None, (name, prop)
    props = schema["properties"]
    for name in ("data_ids", "artifact_ids"):
        if name in props and name not in required:
            assert props[name]["default"] == []
        if name in required:
            assert props[name]["minItems"] == 1  # an empty list is refused by the server too
    if "env" in props:
        assert props["env"]["type"] == "object" and props["env"]["default"] == {}
    assert props["hardware"]["default"] == {"cpu": hw.VCPU, "memory": hw.MEMORY, "gpu": hw.GPU}
    assert props["hardware"]["type"] == "object"
    hardware = props["hardware"]["properties"]
    assert list(hardware) == ["cpu", "memory", "gpu"] and all(hardware[k]["title"] == k for k in hardware)
    assert {k: v["default"] for k, v in hardware.items()} == {"cpu": hw.VCPU, "memory": hw.MEMORY, "gpu": hw.GPU}
    assert all(v["type"] in ("number", "integer") for v in hardware.values())
    assert props["timeout"] == {**props["timeout"], "type": "integer", "default": entry.hardware.timeout}


@pytest.mark.parametrize("entrypoint", sorted(FORMS))
def test_descriptions_read_well_in_the_ui(entrypoint: str) -> None:
    schema = _schema(entrypoint)
    texts = _texts(schema)
    assert all(texts), f"a field without a description in {entrypoint}"
    for text in texts:
        assert "None" not in text, text  # never "staged under /files/None"
        assert not re.search(r"[<>]", text), text  # the UI drops `<id>`: jobs//artifact
    props = schema["properties"]
    if "artifact_ids" in props:
        assert "jobs/RUN_ID/artifact" in props["artifact_ids"]["description"]
        assert "/files/artifact" in props["artifact_ids"]["description"]
    for name in schema.get("required", []):
        assert "Required." in props[name]["description"]
    assert "600" in props["timeout"]["description"] or "3600" in props["timeout"]["description"]
    spec = next(s for s in catalog_deployments(CATALOG) if str(s.ref) == entrypoint)
    assert not re.search(r"[<>]", spec.description), spec.description  # the deployment page too


def test_an_entrypoint_without_limits_or_inputs_still_gets_a_form() -> None:
    catalog = parse_catalog("bare:\n  v1:\n    run:\n      app: {cmd: [run]}\n      handler: {image_url: img:1}\n")
    schema = catalog_deployments(catalog)[0].parameter_openapi_schema
    assert list(schema["properties"]) == ["hardware", "timeout", "callback_url", "array"]
    assert schema["properties"]["timeout"]["default"] is None  # no limit in the catalog: empty
    assert "no limit" in schema["properties"]["timeout"]["description"]
    assert "None" not in " ".join(_texts(schema))


def test_the_names_of_every_path_bind_to_the_flow() -> None:
    """What `jobcloud run` and the Python API send (`parameters_of`) and what `prefect deployment
    run --param` sends are the flow's parameter names; anything else is refused."""
    from prefect.exceptions import SignatureMismatchError

    ref = EntrypointRef.parse("torchfit/v1/train")
    entry = CATALOG.get(ref)
    flow = flow_for(ref, CATALOG)
    request = validate_request(entry, JobRequest(config_id="c/a.yaml", data_ids=["d"], env={"TORCHFIT_EPOCHS": "3"}, timeout=60))
    sent = parameters_of(request)
    assert sent == {"config_id": "c/a.yaml", "data_ids": ["d"], "env": {"TORCHFIT_EPOCHS": "3"}, "timeout": 60}
    got = request_from_parameters(entry, flow.validate_parameters(sent))
    assert got.model_dump(exclude={"hardware"}) == request.model_dump(exclude={"hardware"})
    assert got.hardware is not None and got.hardware.model_dump() == {"cpu": 2.0, "memory": 2048, "gpu": 0}
    got = request_from_parameters(entry, flow.validate_parameters({**sent, "hardware": {"gpu": 1}}))
    assert got.hardware is not None and got.hardware.model_dump() == {"cpu": 2.0, "memory": 2048, "gpu": 1}
    # What the UI form submits untouched but for the inputs: every field with its default.
    form = {name: prop.get("default") for name, prop in flow.parameters.properties.items()}
    form.update(config_id="c/a.yaml", data_ids=["d"])
    got = request_from_parameters(entry, flow.validate_parameters(form))
    assert (got.config_id, got.data_ids, got.env, got.timeout) == ("c/a.yaml", ["d"], {}, 3600)
    # torchfit/train takes no artifacts: Prefect refuses the name, and so does the flow's body.
    with pytest.raises(SignatureMismatchError, match="artifact_ids"):
        flow.validate_parameters({**sent, "artifact_ids": ["jobs/x/artifact"]})
    with pytest.raises(ParameterError, match="takes no artifact_ids"):
        request_from_parameters(entry, {**sent, "artifact_ids": ["jobs/x/artifact"]})


def test_the_flow_refuses_a_run_without_its_required_inputs() -> None:
    from prefect.exceptions import ParameterTypeError

    ref = EntrypointRef.parse("linefit/v1/predict")
    flow = flow_for(ref, CATALOG)
    with pytest.raises(ParameterTypeError, match="artifact_ids"):
        flow.validate_parameters({"data_ids": ["d"], "artifact_ids": []})
    with pytest.raises(ParameterTypeError, match="artifact_ids"):
        flow.validate_parameters({"data_ids": ["d"]})


def test_required_inputs_are_checked_before_anything_starts() -> None:
    entry = CATALOG.get(EntrypointRef.parse("torchfit/v1/predict"))
    with pytest.raises(ParameterError) as exc:
        validate_request(entry, JobRequest(data_ids=["d"]))
    message = str(exc.value)
    assert "missing required input: artifact_ids" in message
    assert "--artifact KEY" in message and "jobs/RUN_ID/artifact" in message
    with pytest.raises(ParameterError, match="missing required inputs: config_id .*; data_ids"):
        validate_request(CATALOG.get(EntrypointRef.parse("linefit/v1/train")), JobRequest())
    # The form's empty text box is no config.
    assert JobRequest(config_id="").config_id is None


def test_jobcloud_run_without_a_required_input_exits_2(cli) -> None:
    proc = cli("run", "torchfit/v1/predict", "--data", "samples/torchfit/data", "--local")
    assert proc.returncode == 2, proc.stderr
    assert "missing required input: artifact_ids" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_required_inputs_must_be_inputs_the_entrypoint_takes() -> None:
    bad = (
        "a:\n  v1:\n    e:\n      required_inputs: [config_id]\n      app: {cmd: [x]}\n"
        "      handler: {image_url: i, files_down: {data_ids: data}}\n"
    )
    with pytest.raises(CatalogError) as exc:
        parse_catalog(bad)
    assert "a.v1.e: required_inputs: 'config_id' is not in handler.files_down" in str(exc.value)
    with pytest.raises(CatalogError, match="required_inputs"):
        parse_catalog(bad.replace("[config_id]", "[bogus]"))


def test_names_that_would_clash_are_refused() -> None:
    from jobcloud.blocks.errors import UserError
    from jobcloud.deployments.deploy.sync import desired_deployments

    # x/y/y-z and x-y/y/z: both flow x-y-z, both deployment x-y-y-z.
    clash = parse_catalog(
        "x:\n  y:\n    y-z:\n      app: {cmd: [a]}\n      handler: {image_url: i}\n"
        "x-y:\n  y:\n    z:\n      app: {cmd: [a]}\n      handler: {image_url: i}\n"
    )
    with pytest.raises(UserError, match="would both be deployment 'x-y-z/x-y-y-z'"):
        desired_deployments(clash)


def test_prune_removes_deployments_of_the_old_names(prefect_api: str, jc_env: dict[str, str]) -> None:
    """A server deployed by an earlier JobCloud has `linefit-train/v1` and `linefit-train/nightly`;
    `deploy` reports them, `deploy --prune` deletes them and keeps the new ones."""
    from jobcloud.deployments.deploy.sync import MANAGED_TAG, sync
    from tests.prefect_helpers import prefect_client, prefect_settings

    catalog = load_catalog(ROOT / "application_config.yaml")
    with prefect_client(prefect_api) as client:
        flow_id = client.create_flow_from_name("linefit-train")
        for old in ("v1", "nightly"):
            client.create_deployment(
                flow_id=flow_id,
                name=old,
                entrypoint="jobcloud.flows.catalog_flows.linefit/v1/train",
                tags=[MANAGED_TAG, "app:linefit", "version:v1", "entrypoint:train"],
            )
    with prefect_settings(prefect_api):
        kept = sync(catalog, prefect_yaml=ROOT / "prefect.yaml")
        warned = {c.name for c in kept if c.action == "warning"}
        assert {"linefit-train/v1", "linefit-train/nightly"} <= warned
        pruned = sync(catalog, prune=True, prefect_yaml=ROOT / "prefect.yaml")
    deleted = {c.name for c in pruned if c.action == "deleted"}
    assert {"linefit-train/v1", "linefit-train/nightly"} <= deleted
    from prefect.exceptions import ObjectNotFound

    with prefect_client(prefect_api) as client:
        for gone in ("linefit-train/v1", "linefit-train/nightly"):
            with pytest.raises(ObjectNotFound):
                client.read_deployment_by_name(gone)
        for ref, _ in catalog.entries():
            dep = client.read_deployment_by_name(ref.deployment_full_name)
            assert dep.name == f"{ref.application}-{ref.version}-{ref.entrypoint}"
            assert dep.parameter_openapi_schema == _schema(str(ref))
        assert client.read_deployment_by_name("linefit-train/linefit-v1-train-nightly").name

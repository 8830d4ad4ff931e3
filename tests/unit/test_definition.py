"""The entrypoint's definition travels with its deployment (flows/definition.py)."""

from __future__ import annotations

import json

import pytest

import jobcloud.flows.catalog_flows as catalog_flows
from jobcloud.blocks.errors import CatalogError
from jobcloud.deployments.deploy.sync import catalog_deployments, what_changed
from jobcloud.flows.catalog import EntrypointRef, parse_catalog
from jobcloud.flows.definition import DEFINITION_ENV, definition_of, definition_sha256, deployed_entry, encode_definition

CATALOG = """
app:
  v1:
    run:
      description: Runs with a secret.
      required_inputs: [config_id]
      app:
        cmd: ["echo $TOKEN >/dev/null; cat /files/config/*"]
        env: [EPOCHS]
        secrets: [TOKEN]
      handler:
        image_url: "localhost/app:1"
        files_down: {config_id: config}
        files_up: {output: output}
      aws_resources:
        hardware: {MEMORY: 512, VCPU: 2, GPU: 1}
        timeout: 900
        retries: 2
"""
REF = EntrypointRef.parse("app/v1/run")


def test_the_definition_round_trips_exactly() -> None:
    entry = parse_catalog(CATALOG).get(REF)
    env = {DEFINITION_ENV: encode_definition(REF, entry)}
    assert deployed_entry(REF, env) == entry
    assert definition_of(REF, entry, env).source == "deployment"
    assert definition_of(REF, entry, {}).source == "catalog"
    assert definition_of(REF, entry, env).sha256 == definition_sha256(entry)


def test_a_definition_of_another_entrypoint_is_not_used() -> None:
    entry = parse_catalog(CATALOG).get(REF)
    env = {DEFINITION_ENV: encode_definition(REF, entry)}
    assert deployed_entry(EntrypointRef.parse("app/v1/other"), env) is None


def test_a_broken_definition_says_deploy_again() -> None:
    with pytest.raises(CatalogError, match="deploy again"):
        deployed_entry(REF, {DEFINITION_ENV: "{not json"})
    with pytest.raises(CatalogError, match="not a valid definition"):
        deployed_entry(REF, {DEFINITION_ENV: json.dumps({"ref": str(REF), "entry": {"app": {}}})})


def test_a_flow_run_builds_its_flow_from_the_deployment_not_the_catalog_file(monkeypatch, tmp_path) -> None:
    entry = parse_catalog(CATALOG).get(REF)
    monkeypatch.setenv("JOBCLOUD_CONFIG", str(tmp_path / "no-such-catalog.yaml"))
    monkeypatch.setenv(DEFINITION_ENV, encode_definition(REF, entry))
    flow = getattr(catalog_flows, catalog_flows.attribute_name(REF))
    assert flow.name == "app-run"
    assert flow.description == "Runs with a secret." and "localhost/app:1" in (flow.fn.__doc__ or "")


def test_deploy_puts_the_definition_in_the_job_variables_and_says_what_changed() -> None:
    catalog = parse_catalog(CATALOG)
    spec = catalog_deployments(catalog)[0]
    assert deployed_entry(REF, spec.job_variables["env"]) == catalog.get(REF)
    changed = parse_catalog(CATALOG.replace("localhost/app:1", "localhost/app:2").replace("VCPU: 2", "VCPU: 4"))
    new = catalog_deployments(changed)[0]
    said = what_changed({"job_variables": spec.job_variables}, {"job_variables": new.job_variables})
    assert said == "definition (aws_resources.hardware, handler.image_url)"
    assert what_changed({"job_variables": {}}, {"job_variables": new.job_variables}) == "definition (new)"
    assert what_changed({"tags": ["a"]}, {"tags": ["b"]}) == "tags"

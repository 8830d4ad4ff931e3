"""prefect.yaml stays valid and in step with application_config.yaml; it has a schedule example."""

from __future__ import annotations

from pathlib import Path

import yaml

from jobcloud.deployments.deploy.sync import catalog_deployments, render_prefect_yaml, scheduled_deployments
from jobcloud.flows.catalog import load_catalog
from jobcloud.flows.request import JobRequest

ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = ROOT / "prefect.yaml"


def test_prefect_yaml_matches_the_catalog() -> None:
    catalog = load_catalog(ROOT / "application_config.yaml")
    wanted = render_prefect_yaml(catalog, PREFECT_YAML)
    assert PREFECT_YAML.read_text() == wanted, (
        "prefect.yaml is out of step with application_config.yaml; run `jobcloud deploy --write-prefect-yaml` and commit prefect.yaml"
    )


def test_prefect_yaml_deployments_are_the_catalog_ones_plus_schedules() -> None:
    catalog = load_catalog(ROOT / "application_config.yaml")
    doc = yaml.safe_load(PREFECT_YAML.read_text())
    unscheduled = {(d["entrypoint"], d["name"], d["work_pool"]["name"]) for d in doc["deployments"] if not d.get("schedules")}
    specs = {(s.entrypoint, s.name, s.work_pool_name) for s in catalog_deployments(catalog)}
    assert unscheduled == specs


def test_schedule_example_has_cron_and_fixed_valid_parameters() -> None:
    catalog = load_catalog(ROOT / "application_config.yaml")
    scheduled = scheduled_deployments(PREFECT_YAML, catalog)
    assert scheduled, "prefect.yaml should carry a scheduled deployment example"
    for spec in scheduled:
        assert spec.schedules and all(len(s.cron.split()) == 5 for s in spec.schedules)
        assert spec.parameters
        JobRequest(**spec.parameters)  # the fixed parameters are valid job parameters
        assert spec.ref.tags[0] in spec.tags

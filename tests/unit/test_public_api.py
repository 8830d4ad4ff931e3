"""The public Python API: `from jobcloud import submit, wait, show, cancel, outputs`, loaded
on first use so that `import jobcloud.flows.job` on a worker does not pay for the client side."""

from __future__ import annotations

import subprocess
import sys

import pytest

import jobcloud
from jobcloud.deployments.jobs import client


@pytest.mark.parametrize("name", ["submit", "wait", "show", "cancel", "outputs", "job", "Job"])
def test_each_name_is_the_clients(name: str) -> None:
    assert getattr(jobcloud, name) is getattr(client, name)
    assert callable(getattr(jobcloud, name)) and getattr(client, name).__doc__


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = jobcloud.nope


def test_importing_the_package_loads_no_prefect() -> None:
    code = "import sys, jobcloud; print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'jobcloud')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "['jobcloud']"

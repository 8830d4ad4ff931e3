"""JobCloud: containerized scientific applications as Prefect jobs.

The public Python API, for notebooks and scripts:

    from jobcloud import submit, wait, show, cancel, outputs
    job = submit("linefit/v1/train", config="examples/config.yaml", data=["examples/points.csv"])
    wait(job.id)                      # "Completed", "Failed", ...
    outputs(job.id, "results/")       # the job's output keys, downloaded into results/

Everything JobCloud installs lives in this namespace, so a Prefect project keeps its own
`flows`, `blocks` and `deployments` packages. The subpackages, lowest layer first (each imports
only those before it; tests/unit/test_layers.py checks it):

- `jobcloud.blocks`: the foundation (errors, keys, settings, job stores, transfers, the engine).
- `jobcloud.flows`: the job flow and its tasks.
- `jobcloud.deployments`: the worker, the server side, the HTTP API and the CLI.
- `jobcloud.images`: the image recipes (package data).

This module imports nothing at import time: a worker that runs `jobcloud.flows.job` does not
pay for the client side. The API's names are loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Array", "Job", "cancel", "job", "outputs", "show", "submit", "submit_array", "wait"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from jobcloud.deployments.jobs import client

        return getattr(client, name)
    raise AttributeError(f"module 'jobcloud' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

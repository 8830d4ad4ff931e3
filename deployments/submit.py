"""Submitting jobs to deployments on a Prefect server."""

from __future__ import annotations

from flows.catalog import Entrypoint, EntrypointRef
from flows.errors import ParameterError
from flows.request import JobRequest


def submit_and_report(ref: EntrypointRef, entry: Entrypoint, request: JobRequest, wait: bool, as_json: bool) -> int:
    """Submit to the deployment `<application>-<entrypoint>/<version>`."""
    raise ParameterError("submitting to a Prefect server is not available in this version; add --local")

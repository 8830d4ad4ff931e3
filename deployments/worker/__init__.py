"""The JobCloud worker type (`fast_worker`, the `prefect.collections` entry point) and its
fork server (`warm_start`, also each flow run's command: `python -m
jobcloud.deployments.worker.warm_start`).

May import: `jobcloud.blocks`, `jobcloud.flows`. No other room of `jobcloud.deployments`: a worker host
loads only what runs jobs.
"""

"""The JobCloud worker type (`fast_worker`, the `prefect.collections` entry point) and its
fork server (`warm_start`, also each flow run's command: `python -m
deployments.worker.warm_start`).

May import: `blocks`, `flows`. Never `deployments.server` or `deployments.cli`: a worker host
loads only what runs jobs.
"""

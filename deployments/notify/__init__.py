"""Telling people and the server what happened: Prefect automations and notification blocks.

- `notifications`: automations that notify when jobs finish or fail (webhook, email).
- `automations`: the zombie automation that ends runs whose host died.
- `email_block`: `JobCloudEmail`, an SMTP notification block (a `prefect.collections` entry point).

May import: `jobcloud.blocks`, `jobcloud.flows`, `jobcloud.deployments.worker`, `.server`,
`.pools`, `.imaging`.
"""

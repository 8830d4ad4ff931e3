"""`jobcloud deploy`: make the Prefect server's deployments and pools match the catalog.

- `sync`: one deployment per entrypoint, pools, automations and notifications, prefect.yaml.
- `watch`: `jobcloud deploy --watch`, keeping the server in step with the catalog file.

May import: everything in `jobcloud.deployments` below `http_api` and `cli`.
"""

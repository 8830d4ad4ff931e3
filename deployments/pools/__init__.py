"""Work pools: which worker types they have, their base job templates, what each platform gives.

- `work_pools`: pools `cpu` and `gpu`, their priority queues and concurrency slots.
- `types`: the worker types a pool can have (`jobcloud`, docker, kubernetes, ecs, ...).
- `templates`: JobCloud's base job templates for Prefect's own worker types.
- `resources`: an entrypoint's image, CPU, memory, GPUs and timeout as each platform's job variables.
- `in_container`: whether an image can run the job flow inside itself.

May import: `jobcloud.blocks`, `jobcloud.flows`, `jobcloud.deployments.worker`,
`jobcloud.deployments.server`.
"""

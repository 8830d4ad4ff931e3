"""JobCloud's HTTP API (`jobcloud api serve`): a thin FastAPI layer over `jobcloud.deployments.jobs`
for web front-ends and services (the registry, files, jobs, the Swiss AI service contract).

May import: everything in `jobcloud.deployments` except `cli`; see docs/api.md."""

"""JobCloud's HTTP API (`jobcloud api serve`): a thin FastAPI layer over `deployments.server`
for web front-ends and services (the registry, files, jobs, the Swiss AI service contract).
It sits above deployments.server and below deployments.cli; see docs/api.md."""

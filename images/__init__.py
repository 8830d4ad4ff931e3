"""images/ as package data: installed as `jobcloud.images` (see pyproject.toml), so that
`jobcloud.deployments.imaging.build` finds the recipes and Dockerfiles in any install."""

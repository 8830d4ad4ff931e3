"""images/ as package data: installed as `deployments.images` (see pyproject.toml), so that
`deployments.server.images_build` finds the recipes and Dockerfiles in any install."""

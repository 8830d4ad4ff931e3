"""Everything that talks to a Prefect server: local server, job submission, the CLI."""

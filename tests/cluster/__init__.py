"""The cluster tier: JobCloud on several "hosts" (Linux network namespaces on one machine, joined
by a bridge) — a Prefect server on PostgreSQL, two worker hosts, an S3 store — and what happens
when one of them restarts, is cut off or dies. Needs root (`ip netns`); see README.md."""

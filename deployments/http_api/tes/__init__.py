"""GA4GH TES v1.1 under `/ga4gh/tes/v1`: each task is a flow run of the `tes/v1/task` deployment
(docs/tes.md)."""

"""The foundation: errors, key safety, settings, the container engine, job stores and transfers.

What lives here:
- `errors`: every JobCloud error (user errors exit 2, platform failures exit 1).
- `keys`: job-store keys, checked so they never leave the store's root.
- `settings`: every `JOBCLOUD_*` environment variable, one model; `settings_doc` renders it
  into docs/settings.md.
- `engine`: the container engine (Docker, or Podman's Docker-compatible API).
- `store/`: the job store (local folder, S3, GCS), its Prefect block, which one to open.
- `transfer/`: moving one file to or from a store (the `Transfer` protocol and its
  local, fsspec and S3 implementations).
- `url_policy`, `url_fetch`, `object_fetch`: which URLs outside the job store a job may read
  (the operator's allow-list, internal addresses), reading an http(s) file under it, reading
  an object or folder of another bucket under it.

May import: nothing of JobCloud's outside `blocks` (never `flows` or `deployments`).
"""

"""How soon the world hears that a job ended: its callback and its webhook notification.

Starts a real `prefect server start` (its own home and port), a local HTTP receiver for the
callbacks and one for the webhook, installs the notification automations (`jobcloud deploy`
with JOBCLOUD_NOTIFY_WEBHOOK_URL), then runs N small jobs one after another in this process
(`run_local`, in-container mode: the command is a subprocess, so no engine is needed). For each
job: from the time Prefect recorded its final state (the flow run's state timestamp) to the
arrival of its final callback and of its webhook notification. Prints median, 90th percentile
and maximum (negative: it arrived before the state was recorded; the callback is sent once the
manifest is written, just before the flow returns).

    .venv/bin/python bench/callbacks.py --jobs 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CATALOG = {
    "bench": {
        "v1": {
            "tiny": {
                "app": {"cmd": ["echo done > output/result.txt"]},
                "handler": {"image_url": "localhost/not/needed:1", "files_up": {"output": "output", "log": "log"}},
            }
        }
    }
}
NOTIFY_WAIT_S = 60


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs to run (default 20)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    from jobcloud.deployments.server.processes import PrefectServer
    from tests.receivers import HttpReceiver, free_port

    tmp = Path(tempfile.mkdtemp(prefix="jobcloud-bench-callbacks-"))
    server = PrefectServer(home=tmp / "ph", port=free_port()).start()
    callback, webhook = HttpReceiver("ok"), HttpReceiver("ok")
    try:
        (tmp / "files").mkdir()
        (tmp / "catalog.yaml").write_text(yaml.safe_dump(CATALOG))
        # Set before Prefect is imported: its background workers read the environment once.
        os.environ.update(server.env())
        os.environ.update(
            JOBCLOUD_HOME=str(tmp / "home"),
            JOBCLOUD_STORAGE=str(tmp / "store"),
            JOBCLOUD_CONFIG=str(tmp / "catalog.yaml"),
            JOBCLOUD_RUNNER="process",
            JOBCLOUD_FILES_DIR=str(tmp / "files"),
        )
        deploy = subprocess.run(
            [sys.executable, "-m", "jobcloud.deployments.cli", "deploy"],
            cwd=tmp,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "JOBCLOUD_NOTIFY_WEBHOOK_URL": f"http://127.0.0.1:{webhook.port}/hook"},
        )
        if deploy.returncode != 0:
            raise SystemExit(f"jobcloud deploy failed:\n{deploy.stdout}{deploy.stderr}")
        time.sleep(6)  # the triggers service picks up new automations every few seconds

        from jobcloud.blocks.store.factory import store_from_settings
        from jobcloud.deployments.jobs.run_local import run_local
        from jobcloud.flows.catalog import EntrypointRef, load_catalog
        from jobcloud.flows.request import JobRequest, validate_request
        from tests.prefect_helpers import prefect_client

        ref = EntrypointRef.parse("bench/v1/tiny")
        entry = load_catalog().get(ref)
        request = validate_request(entry, JobRequest(callback_url=callback.url))
        store = store_from_settings()
        to_callback: list[float] = []
        to_webhook: list[float] = []
        for i in range(args.jobs):
            result = run_local(ref, entry, request, store)
            with prefect_client(server.api_url) as client:
                final_at = client.read_flow_run(result.id).state.timestamp.timestamp()
            cb = [r for r in callback.requests if r.json().get("job_id") == result.id and r.json().get("phase") == "final"]
            deadline = time.monotonic() + NOTIFY_WAIT_S
            hook = []
            while not hook and time.monotonic() < deadline:
                hook = [r for r in webhook.requests if result.id in r.body.decode()]
                time.sleep(0.05)
            if not cb or not hook:
                raise SystemExit(f"job {i} ({result.id}, {result.state}): callback {len(cb)}, webhook {len(hook)}")
            to_callback.append(cb[0].at - final_at)
            to_webhook.append(hook[0].at - final_at)
            if not args.json:
                print(
                    f"job {i + 1:2}/{args.jobs} {result.state}: callback {to_callback[-1]:+.3f} s, webhook {to_webhook[-1]:+.3f} s",
                    flush=True,
                )
        figures = {
            name: {"median_s": round(statistics.median(v), 3), "p90_s": round(percentile(v, 0.9), 3), "max_s": round(max(v), 3)}
            for name, v in (("callback", to_callback), ("webhook_notification", to_webhook))
        }
        if args.json:
            print(json.dumps({"jobs": args.jobs, **figures}))
        else:
            for name, f in figures.items():
                print(
                    f"{name:>21}: median {f['median_s']:+.3f} s, p90 {f['p90_s']:+.3f} s, max {f['max_s']:+.3f} s (from the final state, {args.jobs} jobs)"
                )
    finally:
        callback.stop()
        webhook.stop()
        server.stop()


if __name__ == "__main__":
    main()

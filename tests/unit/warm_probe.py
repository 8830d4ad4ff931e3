"""Stands in for prefect.engine in tests of jobcloud.deployments.worker.warm_start."""

import atexit
import os
import signal
import sys
import time

if __name__ == "__main__":
    print(f"probe env={os.environ.get('PROBE_VALUE')} cwd={os.getcwd()} argv={sys.argv[1:]}", flush=True)
    print("probe stderr", file=sys.stderr, flush=True)
    if sys.argv[1:2] == ["sleep"]:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(42))
        print("sleeping", flush=True)
        time.sleep(60)
    if sys.argv[1:2] == ["atexit"]:
        # What Prefect does to drain its log and event workers at the end of a flow run.
        atexit.register(lambda: print("probe atexit ran", flush=True))
    if sys.argv[1:2] == ["settings"]:
        from prefect.settings import get_current_settings

        print(f"probe api url={get_current_settings().api.url}", flush=True)
    sys.exit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)

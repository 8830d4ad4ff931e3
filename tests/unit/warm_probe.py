"""Stands in for prefect.engine in tests of deployments.worker.warm_start."""

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
    sys.exit(int(sys.argv[1]) if sys.argv[1:] and sys.argv[1].isdigit() else 0)

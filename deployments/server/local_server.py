"""A long-lived local Prefect server for `jobcloud run --local`.

Prefect's ephemeral mode starts a server in every new process (9-15 s here). JobCloud instead
starts one `prefect server start` (SQLite, under ~/.jobcloud/prefect) the first time it is
needed and reuses it, so later jobs pay about a second; the server also serves the Prefect UI.
An explicit `PREFECT_API_URL` always wins.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

from jobcloud.blocks.settings import get_settings
from jobcloud.deployments.server.processes import PrefectServer, healthy

START_TIMEOUT_S = 90


def _state_file() -> Path:
    return get_settings().home / "server.json"


def running_url() -> str | None:
    """The API URL of JobCloud's local server if it is up."""
    try:
        info = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return None
    url = info.get("url")
    return url if url and healthy(url) else None


def start(quiet: bool = False) -> str:
    """Start the local server unless it runs; return its API URL."""
    url = running_url()
    if url:
        return url
    server = PrefectServer(home=get_settings().home / "prefect")
    if not quiet:
        print(f"starting a local Prefect server at {server.api_url[:-4]} (first run only)...", file=sys.stderr)
    # Its own session (see processes.py): it outlives this command, later jobs reuse it.
    server.start(timeout=START_TIMEOUT_S)
    _state_file().write_text(json.dumps({"pid": server.proc.popen.pid, "url": server.api_url, "port": server.port}))
    _sweep_in_background(server.api_url)
    return server.api_url


def _sweep_in_background(api_url: str) -> None:
    """Remove what jobs of earlier sessions of this server left (`python -m jobcloud.flows.sweeper`) and install
    the zombie-run automation, in processes of their own that end when they are done: this
    command does not wait for them."""
    env = {**os.environ, "PREFECT_API_URL": api_url}
    for module in ("jobcloud.flows.sweeper", "jobcloud.deployments.notify.automations"):
        # The zombie-run automation too (automations.py). Both in child processes: importing
        # Prefect here, before PREFECT_API_URL is set, would fix the wrong API for this command.
        subprocess.Popen(
            [sys.executable, "-m", *module.split()],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop() -> bool:
    """Stop JobCloud's local server; True if one was running."""
    try:
        info = json.loads(_state_file().read_text())
    except (OSError, ValueError):
        return False
    pid = info.get("pid")
    stopped = False
    if pid:
        try:
            os.killpg(pid, signal.SIGTERM)
            stopped = True
        except (ProcessLookupError, PermissionError):
            pass
    _state_file().unlink(missing_ok=True)
    return stopped


def _profile_api_url() -> str | None:
    """PREFECT_API_URL of the active Prefect profile, read without importing Prefect."""
    prefect_home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    try:
        profiles = tomllib.loads((prefect_home / "profiles.toml").read_text())
    except (OSError, ValueError):
        return None
    name = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    return profiles.get("profiles", {}).get(name, {}).get("PREFECT_API_URL")


def ensure_api() -> str:
    """Point this process at a Prefect API: PREFECT_API_URL (environment or profile) if set,
    else JobCloud's local server.

    Must run before Prefect is imported: Prefect's background workers (logs, events) read
    their settings once, from the environment.
    """
    configured = os.environ.get("PREFECT_API_URL") or _profile_api_url()
    if configured:
        os.environ["PREFECT_API_URL"] = configured
        return configured
    url = start()
    os.environ["PREFECT_API_URL"] = url
    return url

"""`jobcloud deploy --watch`: keep the server in step with the catalog file.

Chosen over a scheduled sync flow because a change reaches the server within `interval`
seconds (a schedule is at best once a minute), and the process that watches the file is the
one that can read it: a sync flow would run on some worker that may not see the file. It polls
the file's content hash, not inotify, so it also works on network and container-mounted
folders. An invalid catalog is reported and skipped; the server keeps the last good state.
Run it beside the server (e.g. as a systemd unit or a sidecar container).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from jobcloud.blocks.errors import CatalogError
from jobcloud.flows.catalog import Catalog, load_catalog


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def watch(
    path: Path,
    on_change: Callable[[Catalog], None],
    on_error: Callable[[CatalogError], None],
    interval: float = 2.0,
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Call ``on_change`` with the catalog now and after every change of its content.

    Runs until ``stop()`` is true (checked every ``interval`` seconds) or Ctrl-C.
    """
    seen: str | None = None
    while not stop():
        digest = _digest(path)
        if digest != seen:
            seen = digest
            try:
                catalog = load_catalog(path)
            except CatalogError as exc:
                on_error(exc)
            else:
                on_change(catalog)
        time.sleep(interval)

"""`jobcloud deploy --watch`: every content change is synced once; a broken catalog is skipped."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from jobcloud.deployments.deploy.watch import watch

ONE = "app:\n  v1:\n    a: {app: {cmd: [x]}, handler: {image_url: i}}\n"
TWO = ONE + "    b: {app: {cmd: [y]}, handler: {image_url: i}}\n"


def test_watch_syncs_on_change_and_skips_invalid(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(ONE)
    seen: list[list[str]] = []
    errors: list[str] = []
    done = threading.Event()

    def on_change(catalog) -> None:
        seen.append([r.entrypoint for r, _ in catalog.entries()])

    thread = threading.Thread(
        target=watch,
        args=(path, on_change, lambda e: errors.append(str(e))),
        kwargs={"interval": 0.02, "stop": done.is_set},
        daemon=True,
    )
    thread.start()

    def wait_until(cond) -> None:
        deadline = time.monotonic() + 5
        while not cond():
            assert time.monotonic() < deadline, (seen, errors)
            time.sleep(0.01)

    wait_until(lambda: seen == [["a"]])
    time.sleep(0.1)
    assert seen == [["a"]]  # no change, no sync
    path.write_text("app: [not, a, catalog")
    wait_until(lambda: errors)
    path.write_text(TWO)
    wait_until(lambda: len(seen) == 2)
    done.set()
    thread.join(2)
    assert seen == [["a"], ["a", "b"]]
    assert "not valid YAML" in errors[0]

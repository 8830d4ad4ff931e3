"""`jobcloud deploy --watch`: every content change is synced once; a broken catalog is skipped."""

from __future__ import annotations

import threading
from pathlib import Path

from jobcloud.deployments.deploy.watch import watch
from tests.waiting import wait_until

ONE = "app:\n  v1:\n    a: {app: {cmd: [x]}, handler: {image_url: i}}\n"
TWO = ONE + "    b: {app: {cmd: [y]}, handler: {image_url: i}}\n"


class Passes:
    """The watcher's ``stop`` hook, counting its passes: it is asked once before each pass, so
    when it has been asked n + 2 times, pass n + 1 (a whole read of the file) is over."""

    def __init__(self) -> None:
        self.count = 0
        self.done = threading.Event()

    def __call__(self) -> bool:
        self.count += 1
        return self.done.is_set()


def test_watch_syncs_on_change_and_skips_invalid(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(ONE)
    seen: list[list[str]] = []
    errors: list[str] = []
    passes = Passes()

    def on_change(catalog) -> None:
        seen.append([r.entrypoint for r, _ in catalog.entries()])

    thread = threading.Thread(
        target=watch,
        args=(path, on_change, lambda e: errors.append(str(e))),
        kwargs={"interval": 0.02, "stop": passes},
        daemon=True,
    )
    thread.start()

    def state() -> str:
        return f"seen {seen}, errors {errors}, {passes.count} passes"

    wait_until(lambda: seen == [["a"]], 5, interval=0.01, message=state)
    # Three more passes over the unchanged file (not a guess at how long they take): no sync.
    after = passes.count
    wait_until(lambda: passes.count >= after + 4, 5, interval=0.01, message=state)
    assert seen == [["a"]]  # no change, no sync
    path.write_text("app: [not, a, catalog")
    wait_until(lambda: errors, 5, interval=0.01, message=state)
    path.write_text(TWO)
    wait_until(lambda: len(seen) == 2, 5, interval=0.01, message=state)
    passes.done.set()
    thread.join(2)
    assert seen == [["a"], ["a", "b"]]
    assert "not valid YAML" in errors[0]

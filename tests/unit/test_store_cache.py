"""Result reuse keys: what makes two jobs the same, and what does not."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from jobcloud.blocks.store.job_store import FileRecord, JobStore
from jobcloud.flows.cache import CacheLookup, cache_key, lookup, remember, reuse_outputs
from jobcloud.flows.catalog import Entrypoint
from jobcloud.flows.manifest import InputRecord, JobManifest, OutputRecord


def _inp(key: str, sha: str = "a" * 64, at: str = "/files/data/exp1") -> InputRecord:
    return InputRecord(kind="data_ids", key=key, staged_at=at, files=[FileRecord(key=f"{key}/x.csv", size=3, sha256=sha)])


BASE = dict(image="img:1", image_ident="sha256:1", command=["run"], env={"A": "1"})


def test_same_job_same_key_whatever_the_input_keys() -> None:
    assert cache_key(**BASE, inputs=[_inp("data/exp1")]) == cache_key(**BASE, inputs=[_inp("other/exp1")])


def test_each_part_changes_the_key() -> None:
    k = cache_key(**BASE, inputs=[_inp("data/exp1")])
    assert k != cache_key(**{**BASE, "env": {"A": "2"}}, inputs=[_inp("data/exp1")])
    assert k != cache_key(**{**BASE, "image_ident": "sha256:2"}, inputs=[_inp("data/exp1")])
    assert k != cache_key(**{**BASE, "command": ["run", "-v"]}, inputs=[_inp("data/exp1")])
    assert k != cache_key(**BASE, inputs=[_inp("data/exp1", sha="b" * 64)])
    assert k != cache_key(**BASE, inputs=[_inp("data/exp1", at="/files/data/exp2")])


def _entry(cache: bool) -> Entrypoint:
    return Entrypoint.model_validate(
        {"app": {"cmd": ["run"]}, "handler": {"image_url": "img:1", "files_up": {"output": "output"}}, "cache": cache}
    )


class _Spec:
    image, command, environment = "img:1", ["run"], {"A": "1"}


def test_lookup_remember_and_reuse(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("jobcloud.flows.cache.image_id", lambda image: "sha256:1")
    store = JobStore(str(tmp_path / "store"))
    inputs = [_inp("data/exp1")]
    assert lookup(store, _entry(False), _Spec(), inputs).key is None  # opt-in only
    found = lookup(store, _entry(True), _Spec(), inputs)
    assert found.key and found.earlier is None
    rec = store.write_bytes("jobs/j1/output/r.txt", b"42\n")
    now = datetime.now(UTC)
    m = JobManifest(
        job_id="j1", application="a", version="v", entrypoint="e", image="img:1", command=["run"], env_names=["A"],
        hardware={}, state="Completed", outputs=[OutputRecord(kind="output", **rec.model_dump())],
        started_at=now, finished_at=now,
    )  # fmt: skip
    store.write_bytes("jobs/j1/manifest.json", m.model_dump_json().encode())
    remember(store, found, m)
    again = lookup(store, _entry(True), _Spec(), inputs)
    assert again.earlier is not None and again.earlier.job_id == "j1"
    outs = reuse_outputs(store, again.earlier, "j2")
    assert [(o.key, o.sha256) for o in outs] == [("jobs/j2/output/r.txt", rec.sha256)]
    assert store.read_bytes("jobs/j2/output/r.txt") == b"42\n"
    # Outputs removed since: no reuse.
    store.remove("jobs/j1/output", recursive=True)
    assert lookup(store, _entry(True), _Spec(), inputs).earlier is None
    assert CacheLookup().key is None

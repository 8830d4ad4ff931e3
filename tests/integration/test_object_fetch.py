"""Inputs from another bucket (`jobcloud.blocks.object_fetch`) against a real S3 server
(SeaweedFS): an object, a folder of objects, and each refusal with its reason."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from jobcloud.blocks.object_fetch import ObjectFetchError, fetch_object
from jobcloud.blocks.store.store_urls import store_from_url
from jobcloud.blocks.url_policy import UrlPolicy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def options(seaweed, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The job store's connection settings (its own bucket), and a second bucket of data."""
    s3 = seaweed.client()
    seaweed.make_bucket("jobs")
    seaweed.make_bucket("public-data")
    s3.put_object(Bucket="public-data", Key="set/a.csv", Body=b"x,y\n1,2\n")
    s3.put_object(Bucket="public-data", Key="set/sub/b.csv", Body=b"b" * 1000)
    mp = pytest.MonkeyPatch()
    for k, v in seaweed.env().items():
        mp.setenv(k, v)
    store = store_from_url("s3://jobs/jc")
    yield dict(store.fs.storage_options)
    mp.undo()


POLICY = UrlPolicy(patterns=["s3://public-data/set/*"], max_bytes=5000)


def test_an_object_and_a_folder_of_another_bucket(options: dict, tmp_path: Path) -> None:
    [(rel, got)] = fetch_object("s3://public-data/set/a.csv", tmp_path / "a.csv", "FILE", POLICY, options)
    assert (tmp_path / "a.csv").read_bytes() == b"x,y\n1,2\n"
    assert rel == "" and got.size == 8 and got.sha256 == hashlib.sha256(b"x,y\n1,2\n").hexdigest()
    files = fetch_object("s3://public-data/set", tmp_path / "set", "DIRECTORY", UrlPolicy(patterns=["s3://public-data/*"]), options)
    assert [(rel, f.size) for rel, f in files] == [("a.csv", 8), ("sub/b.csv", 1000)]
    assert (tmp_path / "set" / "sub" / "b.csv").read_bytes() == b"b" * 1000


@pytest.mark.parametrize(
    ("url", "kind", "policy", "words"),
    [
        ("s3://public-data/set/absent.csv", "FILE", POLICY, "no such object"),
        ("s3://public-data/other/a.csv", "FILE", POLICY, "JOBCLOUD_API_TES_INPUT_URLS"),
        ("s3://no-such-bucket/set/a.csv", "FILE", UrlPolicy(patterns=["*"]), "no-such-bucket"),
        ("s3://public-data/set/sub/b.csv", "FILE", UrlPolicy(patterns=["*"], max_bytes=999), "more than the 999"),
        ("s3://public-data/set", "DIRECTORY", UrlPolicy(patterns=["*"], max_bytes=1007), "more than the 1007"),
    ],
)
def test_what_cannot_be_read_says_why(options: dict, tmp_path: Path, url: str, kind, policy: UrlPolicy, words: str) -> None:
    with pytest.raises(ObjectFetchError, match=words):
        fetch_object(url, tmp_path / "in", kind, policy, options)
    assert not (tmp_path / "in").exists() or not any((tmp_path / "in").rglob("*"))

"""Who may run what through TES: the image allow-list, the URL allow-list and its address rule,
and reading a URL input for real from a local HTTP server (redirects, sizes, errors)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from jobcloud.blocks.settings import ApiSettings
from jobcloud.blocks.url_fetch import UrlFetchError, fetch_url
from jobcloud.blocks.url_policy import UrlPolicy, UrlPolicyError, canonical, internal_reason
from jobcloud.deployments.http_api.errors import ApiError
from jobcloud.deployments.http_api.tes.rules import IMAGES_SETTING, TesRules, catalog_images
from tests.conftest import ROOT
from tests.file_server import FileServer, Page


@pytest.mark.parametrize(
    "patterns, image, allowed",
    [
        (["alpine"], "alpine", True),
        (["alpine:latest"], "alpine", True),  # no tag: the engine pulls :latest
        (["alpine"], "alpine:3.20", False),
        (["ubuntu:*"], "ubuntu:20.04", True),
        (["quay.io/biocontainers/*"], "quay.io/biocontainers/samtools:1.9--h91753b0_8", True),
        (["quay.io/biocontainers/*"], "quay.io/evil/samtools:1", False),
        (["*"], "anything/at:all", True),
        ([], "alpine", False),
    ],
)
def test_image_patterns(patterns: list[str], image: str, allowed: bool) -> None:
    rules = TesRules(images=patterns, url_policy=UrlPolicy())
    if allowed:
        assert rules.check_image(image, "executors[0].image") == image
        return
    with pytest.raises(ApiError) as err:
        rules.check_image(image, "executors[0].image")
    assert err.value.status == 400 and err.value.field == "executors[0].image"
    assert repr(image) in err.value.message and IMAGES_SETTING in err.value.message


def test_the_default_images_are_the_catalogs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBCLOUD_CONFIG", str(ROOT / "application_config.yaml"))
    images = catalog_images()
    assert "localhost/jobcloud/linefit:1" in images and "localhost/jobcloud/torchfit-cuda:1" in images
    rules = TesRules.from_settings(ApiSettings())
    assert rules.images == images and rules.url_policy.patterns == []
    assert TesRules.from_settings(ApiSettings(tes_images="alpine, ubuntu:*")).images == ["alpine", "ubuntu:*"]
    monkeypatch.setenv("JOBCLOUD_CONFIG", "/nonexistent/catalog.yaml")
    assert catalog_images() == []  # no catalog: no image until the setting names some


def test_canonical_urls() -> None:
    assert canonical("HTTPS://Data.Example.org:443/a/b?x=1#frag") == "https://data.example.org/a/b?x=1"
    assert canonical("http://h:8080") == "http://h:8080/"
    assert canonical("S3://Public-Data/a/b.txt") == "s3://public-data/a/b.txt"
    for bad in (
        "ftp://h/x",
        "s3://bucket",
        "s3://b/a/../x",
        "s3://b//x",
        "gs://u@b/x",
        "https://good.org@evil.org/x",
        "http:///nohost",
        "http://h:99999/",
    ):
        with pytest.raises(UrlPolicyError):
            canonical(bad)


def test_url_patterns_and_the_internal_rule() -> None:
    policy = UrlPolicy(patterns=["https://data.example.org/*", "http://127.0.0.1:8000/*"])
    assert policy.check("https://data.example.org/x/y.csv") == "https://data.example.org/x/y.csv"
    for off in ("https://data.example.org.evil.com/x", "https://evil.com/https://data.example.org/", "http://data.example.org/x"):
        with pytest.raises(UrlPolicyError, match="JOBCLOUD_API_TES_INPUT_URLS"):
            policy.check(off)
    assert policy.may_reach_internal("http://127.0.0.1:8000/f")  # its host named literally
    anything = UrlPolicy(patterns=["*"])
    assert anything.check("http://127.0.0.1:8000/f") and not anything.may_reach_internal("http://127.0.0.1:8000/f")
    assert not UrlPolicy(patterns=["http://127.0.0.*/*"]).may_reach_internal("http://127.0.0.1/f")


@pytest.mark.parametrize(
    "address, words",
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "carrier-grade"),
        ("0.0.0.0", "unspecified"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_internal_addresses(address: str, words: str | None) -> None:
    reason = internal_reason(address)
    assert (reason is None) if words is None else (words in (reason or ""))


@pytest.fixture
def server() -> FileServer:
    with FileServer() as srv:
        yield srv


def test_fetch_a_file_and_follow_an_allowed_redirect(server: FileServer, tmp_path: Path) -> None:
    data = b"x" * 300_000
    server.pages["/data.bin"] = Page(data)
    server.pages["/moved"] = Page(status=302, location="/data.bin")
    policy = UrlPolicy(patterns=[server.url("/*")])
    got = fetch_url(server.url("/moved"), tmp_path / "d" / "in.bin", policy)
    assert (got.size, got.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (tmp_path / "d" / "in.bin").read_bytes() == data
    assert server.hits == ["/moved", "/data.bin"]


def test_fetch_refusals_say_why(server: FileServer, tmp_path: Path) -> None:
    server.pages["/big"] = Page(b"y" * 5000)
    server.pages["/stream"] = Page(b"z" * 200_000, chunked=True)
    server.pages["/away"] = Page(status=302, location="http://elsewhere.invalid/x")
    literal = UrlPolicy(patterns=[server.url("/*")], max_bytes=4096)
    cases = [
        (server.url("/missing"), literal, "HTTP 404"),
        (server.url("/big"), literal, "5000 bytes"),
        (server.url("/stream"), literal, "more than the 4096 bytes"),
        (server.url("/away"), literal, "redirects to"),
        (server.url("/big"), UrlPolicy(patterns=["*"]), "loopback"),  # `*` never opens the worker's own network
        (server.url("/big"), UrlPolicy(), "JOBCLOUD_API_TES_INPUT_URLS"),
    ]
    for url, policy, words in cases:
        with pytest.raises(UrlFetchError, match=words):
            fetch_url(url, tmp_path / "out" / "f", policy)
        assert not (tmp_path / "out" / "f").exists()  # nothing half-written stays
    assert "/away" in server.hits and not [h for h in server.hits if "elsewhere" in h]


def test_a_name_that_resolves_inside_is_refused(server: FileServer, tmp_path: Path) -> None:
    """`localhost` passes a wildcard pattern but resolves to loopback: refused at connect time."""
    url = f"http://localhost:{server.port}/f"
    server.pages["/f"] = Page(b"secret")
    with pytest.raises(UrlFetchError, match="resolves to .*loopback"):
        fetch_url(url, tmp_path / "f", UrlPolicy(patterns=["http://*/*"]))
    assert fetch_url(url, tmp_path / "f", UrlPolicy(patterns=[f"http://localhost:{server.port}/*"])).size == 6

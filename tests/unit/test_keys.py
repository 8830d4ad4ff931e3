"""Keys can never leave the store's root; bad names are refused with a clear reason."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobcloud.blocks.errors import UnsafeKeyError, UserError
from jobcloud.blocks.keys import check_key, check_unique_names, join_key, last_name


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("..", "'..' segment"),
        ("data/../../etc/passwd", "'..' segment"),
        ("data/./x", "'.' segment"),
        ("/etc/passwd", "absolute"),
        ("~/x", "absolute"),
        ("data\\..\\x", "backslash"),
        ("data/%2e%2e/x", "percent-encoded '..'"),
        ("%2E%2E/secret", "percent-encoded '..'"),
        ("data%2f..%2fx", "percent-encoded separator"),
        ("data/%252e%252e/x", "percent-encoded '..'"),  # encoded twice
        ("a\x00b", "NUL"),
        ("a\nb", "control character"),
        ("a//b", "empty segment"),
        ("x" * 256, "longer than 255 bytes"),
        ("data/" + "é" * 128, "longer than 255 bytes"),  # 256 bytes in UTF-8
        ("s3://bucket/x", "looks like a URL"),
        ("", "empty"),
    ],
)
def test_bad_keys_are_refused_with_the_reason(key: str, reason: str) -> None:
    with pytest.raises(UnsafeKeyError) as info:
        check_key(key)
    assert reason in str(info.value)
    assert isinstance(info.value, UserError)  # the CLI: message, exit 2


@pytest.mark.parametrize("key", ["data/exp1", "jobs/abc/artifact", "a", "x" * 255, "dir/with space/é.csv", "data/.hidden", "a..b/c"])
def test_good_keys_are_kept(key: str) -> None:
    assert check_key(key) == key


def test_trailing_slash_and_root() -> None:
    assert check_key("data/exp1/") == "data/exp1"
    assert check_key("", allow_root=True) == ""
    assert last_name("data/exp1") == "exp1"
    assert join_key("jobs/", "/1", "output") == "jobs/1/output"
    with pytest.raises(UnsafeKeyError):
        join_key("jobs", "..", "x")


@given(st.lists(st.sampled_from(["..", ".", "a", "%2e%2e", "%2E.", "b", "\\", "/", ""]), min_size=1, max_size=6))
def test_no_accepted_key_escapes_the_root(parts: list[str]) -> None:
    key = "/".join(parts)
    try:
        ok = check_key(key)
    except UnsafeKeyError:
        return
    from urllib.parse import unquote

    for form in (ok, unquote(ok), unquote(unquote(ok))):
        assert not form.startswith("/")
        assert ".." not in form.split("/")


def test_names_differing_only_in_normalization_are_refused() -> None:
    nfc = unicodedata.normalize("NFC", "café.csv")
    nfd = unicodedata.normalize("NFD", "café.csv")
    assert nfc != nfd
    check_unique_names(["a/" + nfc, "b/" + nfd])  # different folders: fine
    with pytest.raises(UserError, match="differ only in Unicode normalization"):
        check_unique_names(["data/" + nfc, "data/" + nfd], where="outputs")

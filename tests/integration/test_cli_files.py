"""`jobcloud files`, `check` and `apps` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def test_put_ls_get_rm_round_trip(cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 4)
    single = tmp_path / "one.yaml"
    single.write_text("x: 1\n")
    assert cli("files", "put", str(src), str(single), "inputs").returncode == 0
    proc = cli("files", "ls", "inputs", "--json")
    listing = json.loads(proc.stdout)
    assert {e["key"] for e in listing["entries"]} == {"inputs/src", "inputs/one.yaml"}
    proc = cli("files", "ls", "inputs/src", "-r", "--json")
    files = {e["key"]: e["size"] for e in json.loads(proc.stdout)["entries"]}
    assert files == {"inputs/src/a.txt": 5, "inputs/src/sub/b.bin": 1024}
    out = tmp_path / "out"
    assert cli("files", "get", "inputs/src", str(out)).returncode == 0
    assert (out / "src" / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 4
    proc = cli("files", "rm", "inputs/src")
    assert proc.returncode == 2 and "-r" in proc.stderr
    assert cli("files", "rm", "inputs/src", "-r").returncode == 0
    proc = cli("files", "ls", "inputs", "--json")
    assert {e["key"] for e in json.loads(proc.stdout)["entries"]} == {"inputs/one.yaml"}


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a\\b", "a/./b", "%2e%2e/x"])
def test_unsafe_keys_exit_2(cli, tmp_path: Path, key: str) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    for args in (("files", "put", str(f), key), ("files", "get", key, str(tmp_path)), ("files", "rm", key), ("files", "ls", key)):
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "invalid key" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_things_exit_2(cli, tmp_path: Path) -> None:
    assert cli("files", "put", str(tmp_path / "nope"), "x").returncode == 2
    assert cli("files", "get", "nothing/here", str(tmp_path)).returncode == 2
    assert cli("files", "rm", "nothing").returncode == 2
    assert cli("files", "put", "onlyone").returncode == 2


def test_a_failed_copy_leaves_no_half_written_key(cli, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 1024)
    assert cli("files", "put", str(src), "d").returncode == 0
    store = Path(cli.env["JOBCLOUD_STORAGE"])
    assert not [p for p in store.rglob("*") if ".part-" in p.name]


def test_check_and_apps(cli, tmp_path: Path) -> None:
    proc = cli("check", str(ROOT / "tests/data/decode_catalog.yaml"))
    assert proc.returncode == 0, proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "tests/data/decode_catalog.yaml").read_text().replace("artifact_ids", "bogus_ids"))
    proc = cli("check", str(bad))
    assert proc.returncode == 2
    assert "decode.v0_10_1.train.handler.files_down: unknown key 'bogus_ids'" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = cli("check", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = cli("apps", "--json")
    rows = json.loads(proc.stdout)["entrypoints"]
    train = next(r for r in rows if r["application"] == "linefit" and r["entrypoint"] == "train")
    assert train["pool"] == "cpu" and train["image"] == "localhost/jobcloud/linefit:1" and train["timeout"] == 600
    cli.env["JOBCLOUD_CONFIG"] = str(ROOT / "tests/data/decode_catalog.yaml")
    rows = json.loads(cli("apps", "--json").stdout)["entrypoints"]
    assert rows[0]["pool"] == "gpu"


def test_a_linked_folder_in_the_store_is_never_served(cli, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "file").write_text("outside the store\n")
    store = Path(cli.env["JOBCLOUD_STORAGE"])
    (store / "data").mkdir(parents=True)
    (store / "data" / "ok.txt").write_text("ok\n")
    (store / "link").symlink_to(outside, target_is_directory=True)
    (store / "data" / "link").symlink_to(outside, target_is_directory=True)
    dest = tmp_path / "dest"
    dest.mkdir()
    for link in ("link", "data/link"):
        for args in (("files", "get", f"{link}/file", str(dest)), ("files", "ls", f"{link}/deep"), ("files", "rm", f"{link}/file")):
            proc = cli(*args)
            assert proc.returncode == 2, (args, proc.stderr)
            assert f"'{link}' is a symbolic link inside the job store; links are never followed" in proc.stderr
            assert "Traceback" not in proc.stderr
    assert list(dest.iterdir()) == []
    assert (outside / "file").read_text() == "outside the store\n"
    listing = json.loads(cli("files", "ls", "-r", "--json").stdout)
    assert [e["key"] for e in listing["entries"]] == ["data/ok.txt"]


def test_put_one_file_to_its_own_key_or_under_a_prefix(cli, tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text("x: 1\n")
    assert cli("files", "put", str(f), "a/b.yaml").returncode == 0
    entries = json.loads(cli("files", "ls", "a", "--json").stdout)["entries"]
    assert entries == [{"key": "a/b.yaml", "size": 5, "type": "file"}]
    # A trailing '/' always names a prefix; so does a last name other than the file's.
    assert cli("files", "put", str(f), "c/").returncode == 0
    assert cli("files", "put", str(f), "config").returncode == 0
    listing = json.loads(cli("files", "ls", "-r", "--json").stdout)["entries"]
    assert {e["key"] for e in listing} == {"a/b.yaml", "c/b.yaml", "config/b.yaml"}
    assert cli("files", "put", str(f), "d/b.yaml/").returncode == 0
    proc = cli("files", "put", str(f), "d/b.yaml")
    assert proc.returncode == 2 and "'d/b.yaml/'" in proc.stderr and "Traceback" not in proc.stderr

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

"""The command line's exit codes for bad usage: 2, a message, no traceback."""

from __future__ import annotations

import pytest

from jobcloud.blocks.errors import ParameterError
from jobcloud.deployments.cli.main import main
from jobcloud.deployments.cli.run import parse_env


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", "a/b/c", "--bogus"],
        ["run", "a/b/c", "--cpu", "abc"],
        ["files"],
        ["files", "put", "only-one"],
        ["nosuchcommand"],
    ],
)
def test_bad_usage_exits_2(argv, capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("JOBCLOUD_HOME", str(tmp_path))
    monkeypatch.setenv("JOBCLOUD_STORAGE", str(tmp_path / "store"))
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_bad_catalog_path_exits_2(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("JOBCLOUD_CONFIG", str(tmp_path / "missing.yaml"))
    assert main(["apps"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_help_exits_0(capsys) -> None:
    assert main(["--help"]) == 0
    assert "run" in capsys.readouterr().out


def test_parse_env_keeps_everything_after_the_first_equals() -> None:
    assert parse_env(["A=b=c", "EMPTY="]) == {"A": "b=c", "EMPTY": ""}
    with pytest.raises(ParameterError):
        parse_env(["=x"])
    with pytest.raises(ParameterError):
        parse_env(["NOVALUE"])

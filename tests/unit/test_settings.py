"""One settings model: every `JOBCLOUD_*` name in the code is one of its fields, nothing reads
the settings at import time, and values parse as JobCloud has always parsed them."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from jobcloud.blocks.errors import UserError
from jobcloud.blocks.settings import ApiSettings, SettingsError, env_name, get_settings, settings_fields
from tests.unit.test_layers import our_modules

ROOT = Path(__file__).resolve().parents[2]
SOURCE_FOLDERS = ("blocks", "flows", "deployments", "jobcloud")
NAME = re.compile(r"JOBCLOUD_[A-Z0-9_]+")
# Python names that look like variables but are not read from the environment.
NOT_VARIABLES = {
    "JOBCLOUD_VARIABLES": "deployments/pools/templates.py: the job variables JobCloud adds per worker type",
    "JOBCLOUD_PACKAGES": "deployments/imaging/build.py: the packages copied into an image",
}
# Import-time code may call none of these (each reads the environment).
ACCESSORS = {"get_settings", "get_api_settings", "JobCloudSettings"}


def setting_names() -> set[str]:
    return {name for name, _ in settings_fields()}


def unknown_names(text: str) -> set[str]:
    """`JOBCLOUD_*` names in ``text`` that are no setting. A name ending in `_` is a prefix in
    prose (`JOBCLOUD_NOTIFY_*`): it must begin some setting's name."""
    names = setting_names()
    unknown = set()
    for found in NAME.findall(text):
        if found in names or found in NOT_VARIABLES:
            continue
        if found.endswith("_") and any(n.startswith(found) for n in names):
            continue
        unknown.add(found)
    return unknown


def test_every_jobcloud_name_in_the_code_is_a_setting() -> None:
    seen: set[str] = set()
    problems = []
    for folder in SOURCE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            seen |= set(NAME.findall(text))
            problems += [f"{path.relative_to(ROOT)}: {name}" for name in sorted(unknown_names(text))]
    assert not problems, (
        "JOBCLOUD_* names that are no field of jobcloud.blocks.settings.JobCloudSettings: add a field, or fix the name:\n"
        + "\n".join(problems)
    )
    assert {"JOBCLOUD_STORAGE", "JOBCLOUD_WARM_SOCKET", "JOBCLOUD_API_KEYS_FILE"} <= seen  # the scan sees the code


def test_the_name_check_finds_a_stray_name() -> None:
    assert unknown_names('os.environ.get("JOBCLOUD_STORAGE_URL")') == {"JOBCLOUD_STORAGE_URL"}
    assert unknown_names("the JOBCLOUD_NOTIFY_* and JOBCLOUD_API_* settings, JOBCLOUD_POOL") == set()
    assert unknown_names("JOBCLOUD_NOPE_* settings") == {"JOBCLOUD_NOPE_"}


def import_time_reads(text: str, filename: str = "<text>") -> list[str]:
    """Where code that runs at import (module and class bodies, decorators, default values)
    reads the settings or a `JOBCLOUD_*` variable: a call of an accessor, or an environment
    read whose name is not a literal of another program's variable."""
    found: list[str] = []

    def env_read(node: ast.AST) -> bool:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            return node.attr in ("environ", "getenv")
        return False

    def literal_other(node: ast.AST) -> bool:
        # os.environ.get("XDG_RUNTIME_DIR", ...), os.environ["HOME"]: another program's variable.
        key = None
        if isinstance(node, ast.Call) and node.args:
            key = node.args[0]
        elif isinstance(node, ast.Subscript):
            key = node.slice
        return isinstance(key, ast.Constant) and isinstance(key.value, str) and not key.value.startswith("JOBCLOUD_")

    def visit(node: ast.AST, parent_call: ast.AST | None = None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for expr in [*child.decorator_list, *child.args.defaults, *[d for d in child.args.kw_defaults if d]]:
                    visit(ast.Expression(expr))
                continue
            if isinstance(child, ast.Lambda):
                continue
            if isinstance(child, ast.Call):
                func = child.func
                called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if called in ACCESSORS:
                    found.append(f"{filename}:{child.lineno}: {called}()")
            if env_read(child):
                use = parent_call if parent_call is not None else node
                if not literal_other(use):
                    found.append(f"{filename}:{child.lineno}: os.{child.attr}")  # type: ignore[attr-defined]
            visit(child, child if isinstance(child, (ast.Call, ast.Subscript)) else parent_call)

    visit(ast.parse(text, filename))
    return found


def test_nothing_reads_settings_at_import_time() -> None:
    problems = []
    for path in our_modules().values():
        problems += import_time_reads(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not problems, "settings read at import time; read them where they are used (get_settings()):\n" + "\n".join(problems)


def test_the_import_time_check_finds_reads() -> None:
    assert import_time_reads("GRACE = get_settings().run_stop_grace_s")
    assert import_time_reads('GRACE = float(os.environ.get("JOBCLOUD_RUN_STOP_GRACE_S", "10"))')
    assert import_time_reads("PATH = os.environ.get(SOCKET_ENV)")
    assert import_time_reads("class A:\n    x = get_settings()")
    assert import_time_reads("def f(x=get_settings().pool): ...")
    assert not import_time_reads("def f():\n    return get_settings().pool")
    assert not import_time_reads('SOCKETS = [os.environ.get("XDG_RUNTIME_DIR", "/run")]')
    assert not import_time_reads('NAME = env_name("pool")')


def _poison() -> dict[str, str]:
    """A value no number or choice setting accepts, for each of them."""
    env = {}
    for name, info in settings_fields():
        args = typing.get_args(info.annotation) or (info.annotation,)
        if any(a in (int, float) for a in args) or typing.get_origin(info.annotation) is typing.Literal:
            env[name] = "poison"
    return env


def test_modules_import_with_every_setting_poisoned() -> None:
    poison = _poison()
    assert "JOBCLOUD_RUN_STOP_GRACE_S" in poison and "JOBCLOUD_RUNNER" in poison
    with pytest.raises(SettingsError):
        with pytest.MonkeyPatch.context() as mp:
            for name, value in poison.items():
                mp.setenv(name, value)
            get_settings()
    modules = sorted(m for m in our_modules() if not m.endswith("__main__"))
    script = (
        "import importlib, json, sys\n"
        "from jobcloud.blocks.settings import SettingsError\n"
        "bad = {}\n"
        "for m in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except SettingsError as exc:\n"
        "        bad[m] = str(exc)\n"
        "print(json.dumps(bad))\n"
    )
    env = {**os.environ, **poison}
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(modules)], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not bad, f"modules that read the settings when imported: {bad}"


# -- parsing ---------------------------------------------------------------------------------
@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("JOBCLOUD_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_flags_parse_as_before(clean_env: pytest.MonkeyPatch) -> None:
    s = get_settings()
    assert (s.assume_gpu, s.images_public, s.watch_cancel, s.warm_start) == (False, False, False, True)
    for text, on in [("1", True), ("0", False), ("true", False), ("yes", False)]:
        clean_env.setenv("JOBCLOUD_ASSUME_GPU", text)  # on only when exactly 1
        assert get_settings().assume_gpu is on
    for text, on in [("0", False), ("1", True), ("no", True), ("false", True)]:
        clean_env.setenv("JOBCLOUD_WARM_START", text)  # off only when exactly 0
        assert get_settings().warm_start is on


def test_empty_means_unset_and_defaults_hold(clean_env: pytest.MonkeyPatch) -> None:
    for name in ("JOBCLOUD_CONFIG", "JOBCLOUD_INFRA_ATTEMPTS", "JOBCLOUD_ZOMBIE_AFTER_S", "JOBCLOUD_STORAGE"):
        clean_env.setenv(name, "")
    s = get_settings()
    assert s.config == Path("application_config.yaml") and s.infra_attempts == 3 and s.zombie_after_s == 90
    assert s.storage_url == str(Path.home() / ".jobcloud" / "store")
    assert (s.worker_stop_grace_s, s.run_stop_grace_s, s.sweep_interval_s, s.cancel_poll_s) == (20, 10, 60, 1)
    assert s.api == ApiSettings()


def test_bad_values_name_the_variable(clean_env: pytest.MonkeyPatch) -> None:
    cases = {
        "JOBCLOUD_INFRA_ATTEMPTS": ("0", "JOBCLOUD_INFRA_ATTEMPTS='0' must be between 1 and 10"),
        "JOBCLOUD_INFRA_RETRY_DELAY_S": ("soon", "JOBCLOUD_INFRA_RETRY_DELAY_S='soon' is not a number"),
        "JOBCLOUD_ZOMBIE_AFTER_S": (
            "20",
            "JOBCLOUD_ZOMBIE_AFTER_S=20: must be at least 60 s (Prefect's 30 s flow-run heartbeat plus one lost beat)",
        ),
        "JOBCLOUD_RUNNER": ("docker", "JOBCLOUD_RUNNER: Input should be 'engine' or 'process'"),
        "JOBCLOUD_API_MAX_BODY_BYTES": ("lots", "JOBCLOUD_API_MAX_BODY_BYTES: Input should be a valid integer"),
    }
    for name, (value, message) in cases.items():
        clean_env.setenv(name, value)
        with pytest.raises(UserError) as caught:
            get_settings()
        assert message in str(caught.value)
        clean_env.delenv(name)
    clean_env.setenv("JOBCLOUD_ZOMBIE_AFTER_S", "a minute")
    with pytest.raises(SettingsError, match=r"JOBCLOUD_ZOMBIE_AFTER_S='a minute' is not a whole number of seconds"):
        get_settings()


def test_a_bad_setting_is_exit_2_on_the_command_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCLOUD_")}
    env["JOBCLOUD_INFRA_ATTEMPTS"] = "many"
    proc = subprocess.run(
        [sys.executable, "-m", "jobcloud.deployments.cli", "check"], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "JOBCLOUD_INFRA_ATTEMPTS='many' is not a number" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_group_and_internal_names(clean_env: pytest.MonkeyPatch) -> None:
    from jobcloud.deployments.worker.warm_start import SOCKET_ENV

    assert SOCKET_ENV == env_name("warm_socket")  # named as text there: its client stays light
    assert env_name("api.keys_file") == "JOBCLOUD_API_KEYS_FILE"
    for wrong in ("api", "api.nope", "nope"):
        with pytest.raises(KeyError):
            env_name(wrong)
    clean_env.setenv("JOBCLOUD_API_MAX_ACTIVE_JOBS", "3")
    clean_env.setenv("JOBCLOUD_SMTP_PASSWORD", "s3cret")
    s = get_settings()
    assert s.api.max_active_jobs == 3 and "s3cret" not in repr(s)
    internal = [name for name, info in settings_fields() if "not by hand" in (info.description or "")]
    assert set(internal) == {"JOBCLOUD_ENTRYPOINT", "JOBCLOUD_POOL", "JOBCLOUD_WARM_SOCKET", "JOBCLOUD_WATCH_CANCEL"}

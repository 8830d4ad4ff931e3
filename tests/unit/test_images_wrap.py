"""`jobcloud images wrap` and the in-container probe without an engine: tags, refusals and their
messages, the build context, the probe's cache, and `jobcloud check`'s warnings (a stand-in
client answers image lookups and throwaway runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from docker.errors import ImageNotFound

from jobcloud.deployments.cli.main import main
from jobcloud.deployments.imaging import wrap as iw
from jobcloud.deployments.pools import in_container as ic
from jobcloud.flows.catalog import load_catalog


class _Image:
    def __init__(self, image_id: str, labels: dict[str, str] | None = None) -> None:
        self.id = image_id
        self.labels = labels or {}
        self.tags: list[str] = []


class _Images:
    def __init__(self, ids: dict[str, str]) -> None:
        self.ids = ids

    def get(self, tag: str) -> _Image:
        if tag not in self.ids:
            raise ImageNotFound(tag)
        return _Image(self.ids[tag])


class _Client:
    def __init__(self, ids: dict[str, str] | None = None) -> None:
        self.images = _Images(ids or {})


def _facts(**kw: Any) -> iw.PythonFacts:
    base = {
        "command": "python3",
        "version": (3, 11, 2),
        "executable": "/usr/bin/python3",
        "venv": True,
        "ensurepip": True,
        "jobcloud_venv": False,
    }
    return iw.PythonFacts(**{**base, **kw})


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("localhost/jobcloud/python:3.11-bookworm", "localhost/jobcloud/python:3.11-bookworm-jobcloud"),
        ("myapp", "myapp:latest-jobcloud"),
        ("registry:5000/lab/app", "registry:5000/lab/app:latest-jobcloud"),
        ("registry:5000/lab/app:2", "registry:5000/lab/app:2-jobcloud"),
        ("lab/app@sha256:" + "ab" * 32, "lab/app:sha256-abababababab-jobcloud"),
    ],
)
def test_default_tag(image: str, tag: str) -> None:
    assert iw.default_tag(image) == tag


def test_min_python_is_what_jobcloud_and_prefect_both_declare() -> None:
    floor = iw.min_python()
    assert floor >= (3, 10)  # prefect 3.8.8: >=3.10
    assert floor == (3, 11)  # JobCloud's own requires-python


def test_a_usable_python_is_not_refused() -> None:
    assert iw.refusal("app:1", _facts(), (3, 11)) is None
    assert iw.refusal("app:1", _facts(ensurepip=False), (3, 11)) is None  # pip is bootstrapped


def test_an_old_python_is_refused_with_what_to_do() -> None:
    refused = iw.refusal("app:1", _facts(version=(3, 9, 18)), (3, 11))
    assert refused is not None and isinstance(refused, iw.UserError)
    assert str(refused).startswith("cannot wrap app:1: its python3 is Python 3.9.18 (/usr/bin/python3); ")
    assert "need 3.11 or newer" in str(refused) and "then wrap that" in str(refused)


def test_a_python_without_venv_is_refused() -> None:
    refused = iw.refusal("app:1", _facts(venv=False), (3, 11))
    assert refused is not None and "no venv module" in str(refused) and "python3-venv" in str(refused)


def test_no_python_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def missing(client: Any, image: str, argv: list[str], timeout: int = 0) -> tuple[int, str]:
        calls.append(argv[0])
        return 127, 'exec: "python3": executable file not found in $PATH'

    monkeypatch.setattr(iw, "run_throwaway", missing)
    with pytest.raises(iw.WrapRefused, match=r"cannot wrap app:1: it has no python3 on its PATH\. .*Python"):
        iw.python_facts(_Client(), "app:1")
    assert calls == ["python3", "python"]


def test_a_python_that_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iw, "run_throwaway", lambda c, i, a, timeout=0: (1, "Segmentation fault"))
    with pytest.raises(iw.WrapRefused, match="its python3 did not answer .exit 1.: Segmentation fault"):
        iw.python_facts(_Client(), "app:1")


def test_python_facts_are_read_from_the_last_json_line(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = {"version": [3, 12, 1], "executable": "/opt/conda/bin/python3", "venv": True, "ensurepip": False, "jobcloud_venv": False}
    monkeypatch.setattr(iw, "run_throwaway", lambda c, i, a, timeout=0: (0, "a banner\n" + json.dumps(answer) + "\n"))
    facts = iw.python_facts(_Client(), "app:1")
    assert facts.version == (3, 12, 1) and facts.executable == "/opt/conda/bin/python3" and not facts.ensurepip


def test_the_final_stage_changes_nothing_but_opt_jobcloud() -> None:
    text = iw.dockerfile("sha256:abc", "/usr/bin/python3")
    first, final = text.split("\nFROM sha256:abc\n")
    assert first.startswith("FROM sha256:abc AS venv\nUSER root\n")
    assert '"/usr/bin/python3", "-I", "/tmp/jobcloud-wrap/wrap_venv.py"' in first
    assert final.strip().splitlines() == ["COPY --from=venv /opt/jobcloud /opt/jobcloud"]


def test_the_context_holds_jobcloud_pip_and_the_script(tmp_path: Path) -> None:
    iw.stage(tmp_path)
    staged = tmp_path / "_stage"
    for path in (
        "jobcloud/pyproject.toml",
        "jobcloud/jobcloud/flows/job.py",
        "pip/pip/__init__.py",
        "wrap_venv.py",
        "constraints.txt",
        "ca-certificates.crt",
    ):
        assert (staged / path).is_file(), path
    assert "prefect==3.8.8" in (staged / "constraints.txt").read_text()
    assert iw.stage_hash(tmp_path, "sha256:a") == iw.stage_hash(tmp_path, "sha256:a") != iw.stage_hash(tmp_path, "sha256:b")
    before = iw.stage_hash(tmp_path, "sha256:a")
    (staged / "jobcloud/jobcloud/flows/job.py").write_text("# an edit of the code: no rewrap without --force\n")
    assert iw.stage_hash(tmp_path, "sha256:a") == before
    (staged / "constraints.txt").write_text("prefect==3.8.9\n")
    assert iw.stage_hash(tmp_path, "sha256:a") != before


def test_build_step_ids_are_recognised() -> None:
    assert iw.STEP_ID.match("--> 1d8ab5d7cc1").group(1) == "1d8ab5d7cc1"
    assert iw.STEP_ID.match(" ---> 1d8ab5d7cc17".strip()).group(1) == "1d8ab5d7cc17"
    assert iw.STEP_ID.match("--> Using cache 2e94bfafd31ef0c2").group(1) == "2e94bfafd31ef0c2"
    assert iw.STEP_ID.match("[2/2] STEP 2/5: COPY --from=venv /opt/jobcloud /opt/jobcloud") is None


def test_a_missing_image_is_a_user_error() -> None:
    with pytest.raises(iw.WrapRefused, match="cannot wrap nope:1: the engine has no such image"):
        iw.wrap("nope:1", client=_Client(), log=lambda m: None)


def test_an_image_that_already_runs_in_container_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iw, "python_facts", lambda c, i: _facts(jobcloud_venv=True))
    monkeypatch.setattr(iw, "probe_in_container", lambda c, i: None)
    result = iw.wrap("rt:1", client=_Client({"rt:1": "sha256:1"}), log=lambda m: None)
    assert result.built is False and result.tag == "rt:1"


def test_an_image_with_a_broken_venv_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iw, "python_facts", lambda c, i: _facts(jobcloud_venv=True))
    monkeypatch.setattr(iw, "probe_in_container", lambda c, i: "cannot import the job flow")
    with pytest.raises(iw.WrapRefused, match="has a /opt/jobcloud/venv that does not work"):
        iw.wrap("rt:1", client=_Client({"rt:1": "sha256:1"}), log=lambda m: None)


def test_cli_refusal_exits_2_without_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(image: str, **kw: Any) -> None:
        raise iw.WrapRefused(image, "it has no python3 on its PATH", "Build it on an image with Python")

    monkeypatch.setattr(iw, "wrap", refuse)
    assert main(["images", "wrap", "localhost/jobcloud/busybox:1"]) == 2
    err = capsys.readouterr().err
    assert "cannot wrap localhost/jobcloud/busybox:1: it has no python3" in " ".join(err.split())
    assert "Traceback" not in err


def test_cli_wrap_needs_an_image(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["images", "wrap"]) == 2


def test_cli_passes_tag_and_force_and_prints_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, Any] = {}

    def fake(image: str, tag: str | None = None, force: bool = False, log: Any = None) -> iw.WrapResult:
        seen.update(image=image, tag=tag, force=force)
        return iw.WrapResult(image=image, tag=tag or "", built=True, seconds=1.5, python="3.11.2")

    monkeypatch.setattr(iw, "wrap", fake)
    assert main(["images", "wrap", "app:1", "--tag", "app:w", "--force", "--json"]) == 0
    assert seen == {"image": "app:1", "tag": "app:w", "force": True}
    assert json.loads(capsys.readouterr().out) == {"image": "app:1", "tag": "app:w", "built": True, "seconds": 1.5, "python": "3.11.2"}


def test_probe_is_remembered_per_image_id(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []

    def run(client: Any, image: str, argv: list[str], timeout: int = 0) -> tuple[int, str]:
        runs.append(image)
        return (0, "") if image == "good:1" else (127, "not found")

    monkeypatch.setattr(ic, "run_throwaway", run)
    monkeypatch.setattr(ic, "_probed", {})
    client = _Client({"good:1": "sha256:g", "good:alias": "sha256:g", "bare:1": "sha256:b"})
    assert ic.probe_in_container(client, "good:1") is None
    assert ic.probe_in_container(client, "good:alias") is None  # same id: no second run
    assert "bare:1 has no /opt/jobcloud/venv/bin/python" in (ic.probe_in_container(client, "bare:1") or "")
    assert runs == ["good:1", "bare:1"]
    assert ic.probe_in_container(client, "gone:1") == "gone:1 is not present on this engine"


def _catalog(tmp_path: Path) -> Any:
    entry = (
        '    {name}:\n      app: {{cmd: ["true"]}}\n      handler:\n        image_url: "{image}"\n'
        "        files_down: {{}}\n        files_up: {{output: output}}\n"
        "      aws_resources: {{hardware: {{MEMORY: 512, VCPU: 1, GPU: {gpu}}}}}\n"
    )
    path = tmp_path / "catalog.yaml"
    path.write_text(
        "app:\n  v1:\n"
        + entry.format(name="a", image="img:1", gpu=0)
        + entry.format(name="b", image="img:1", gpu=0)
        + entry.format(name="g", image="gpu:1", gpu=1)
    )
    return load_catalog(path)


def test_in_container_uses_groups_entrypoints_by_image(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    assert ic.in_container_uses(catalog, {}) == {}
    assert ic.in_container_uses(catalog, {"cpu": "jobcloud", "gpu": "process"}) == {}
    assert ic.in_container_uses(catalog, {"gpu": "kubernetes"}) == {"gpu:1": ["app/v1/g (pool gpu, kubernetes)"]}
    assert ic.in_container_uses(catalog, {"cpu": "docker"}) == {"img:1": ["app/v1/a (pool cpu, docker)", "app/v1/b (pool cpu, docker)"]}


def test_check_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ic, "probe_in_container", lambda c, i: None if i == "ok:1" else f"{i} has no /opt/jobcloud/venv/bin/python")
    client = _Client({"ok:1": "sha256:o", "bad:1": "sha256:b"})
    uses = {"ok:1": ["x/v/a (pool cpu, docker)"], "bad:1": ["x/v/b (pool cpu, docker)"], "far:1": ["x/v/c (pool cpu, docker)"]}
    warnings = ic.in_container_warnings(uses, client)
    assert len(warnings) == 2
    assert warnings[0].startswith("bad:1 cannot run in-container (bad:1 has no /opt/jobcloud/venv/bin/python), yet x/v/b")
    assert "`jobcloud images wrap bad:1`" in warnings[0]
    assert warnings[1] == "far:1 (for x/v/c (pool cpu, docker)) is not present here; cannot tell whether it runs in-container"
    assert ic.in_container_warnings({}, client) == []


def test_check_without_in_container_pools_does_not_touch_the_engine(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _catalog(tmp_path)
    monkeypatch.delenv("JOBCLOUD_POOL_TYPES", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/engine.sock")
    assert main(["check", str(tmp_path / "catalog.yaml")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_check_without_an_engine_says_it_cannot_tell(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _catalog(tmp_path)
    monkeypatch.setenv("JOBCLOUD_POOL_TYPES", "cpu=docker")
    monkeypatch.setenv("JOBCLOUD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/engine.sock")
    assert main(["check", str(tmp_path / "catalog.yaml")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: no container engine answers here" in err and "cannot tell whether img:1 can run in-container" in err


def test_check_refuses_a_bad_pool_types_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _catalog(tmp_path)
    monkeypatch.setenv("JOBCLOUD_POOL_TYPES", "cpu=dokcer")
    assert main(["check", str(tmp_path / "catalog.yaml")]) == 2
    assert "unknown pool type 'dokcer'" in capsys.readouterr().err

"""The TES flow's pieces without an engine: each executor's container (mounts shared by every
executor, working folder, stdio files as arguments), and the deployments `jobcloud deploy` makes."""

from __future__ import annotations

from pathlib import Path

from jobcloud.deployments.deploy.tes import tes_deployments
from jobcloud.flows.container_spec import JOB_LABEL
from jobcloud.flows.tes_plan import TesPlan
from jobcloud.flows.tes_task import executor_command, executor_spec


def _plan(**executor) -> TesPlan:
    return TesPlan(
        executors=[{"image": "alpine", "command": ["md5sum", "/data/in.txt"], **executor}, {"image": "ubuntu:20.04", "command": ["ls"]}],
        inputs=[{"path": "/data/in.txt", "key": "users/a/in.txt"}],
        outputs=[{"path": "/out/sum.txt", "key": "users/a/sum.txt", "url": "file:///s/users/a/sum.txt"}],
        volumes=["/vol/A"],
        cpu=2,
        memory_mb=512,
        store_url="file:///s",
    )


def test_each_executor_mounts_the_task_folders(tmp_path: Path) -> None:
    plan = _plan(workdir="/data", env={"A": "1"})
    first, second = (executor_spec(plan, i, tmp_path, "job-1").create_kwargs() for i in (0, 1))
    mounts = {v["bind"]: k for k, v in first["volumes"].items()}
    assert mounts == {"/data": str(tmp_path / "data"), "/out": str(tmp_path / "out"), "/vol/A": str(tmp_path / "vol/A")}
    assert second["volumes"] == first["volumes"]  # shared by every executor
    assert first["working_dir"] == "/data" and "working_dir" not in second  # the image's own
    assert first["image"] == "alpine" and second["image"] == "ubuntu:20.04"
    assert first["environment"] == {"A": "1"} and first["nano_cpus"] == 2_000_000_000 and first["mem_limit"] == 512 * 1024 * 1024
    assert first["labels"][JOB_LABEL] == "job-1" and first["cap_drop"] == ["ALL"]
    assert first["command"] == ["md5sum", "/data/in.txt"]  # argv as given: no shell


def test_stdio_files_are_arguments_never_script_text() -> None:
    plan = _plan(stdin="/data/in.txt", stdout="/out/sum.txt")
    command = executor_command(plan.executors[0])
    assert command[:2] == ["/bin/sh", "-c"] and "/out/sum.txt" not in command[2]
    assert command[3:] == ["tes-stdio", "/data/in.txt", "/out/sum.txt", "", "md5sum", "/data/in.txt"]


def test_deploy_makes_a_task_deployment_per_jobcloud_pool() -> None:
    specs = tes_deployments({"cpu": "jobcloud", "gpu": "jobcloud"})
    assert [(s.full_name, s.work_pool_name) for s in specs] == [("tes-task/tes-v1-task", "cpu"), ("tes-task/tes-v1-task-gpu", "gpu")]
    assert set(specs[0].parameter_openapi_schema["properties"]) == {"task", "plan"}
    # A task is a job: its run inherits `app:` (listed with the jobs, notified like them).
    assert {"tes", "app:tes", "version:v1", "entrypoint:task"} <= set(specs[0].tags)
    # Pools of Prefect's in-container worker types cannot start one container per executor.
    assert [s.work_pool_name for s in tes_deployments({"cpu": "jobcloud", "gpu": "kubernetes"})] == ["cpu"]


def test_pattern_matches_skip_links_and_other_types(tmp_path: Path) -> None:
    """A match reached through a link is never uploaded: an executor could point one at the
    host's own files."""
    from jobcloud.flows.tes_plan import OutputPlan
    from jobcloud.flows.tes_task import pattern_matches

    data = tmp_path / "files" / "data"
    (data / "run1").mkdir(parents=True)
    (data / "run1" / "a.txt").write_text("a")
    (data / "b.txt").write_text("b")
    (data / ".hidden.txt").write_text("h")
    (data / "dir.txt").mkdir()
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret.txt").write_text("s")
    (data / "link").symlink_to(outside)
    (data / "linked.txt").symlink_to(outside / "secret.txt")
    files = tmp_path / "files"

    def matches(path: str, kind: str = "FILE") -> list[str]:
        item = OutputPlan(path=path, type=kind, key="users/a/o", url="file:///s/users/a/o", path_prefix="/data/")
        return [p for p, _ in pattern_matches(files, item)]

    assert matches("/data/*.txt") == ["/data/b.txt"]  # no dot file (POSIX), no folder, no link
    assert matches("/data/*/*.txt") == ["/data/run1/a.txt"]  # not /data/link/secret.txt
    assert matches("/data/*.txt", "DIRECTORY") == ["/data/dir.txt"]
    assert matches("/data/nothing*") == []

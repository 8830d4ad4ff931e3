"""The catalog model: DECODE's format read unchanged, and precise errors for bad catalogs."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobcloud.blocks.errors import CatalogError, UnknownEntrypointError
from jobcloud.flows.catalog import Entrypoint, EntrypointRef, load_catalog, parse_catalog

DATA = Path(__file__).resolve().parent.parent / "data"
ROOT = Path(__file__).resolve().parent.parent.parent


def test_decode_example_passes_unchanged() -> None:
    catalog = load_catalog(DATA / "decode_catalog.yaml")
    ref = EntrypointRef.parse("decode/v0_10_1/train")
    entry = catalog.get(ref)
    assert "--calib_path=$(find /files/data -name '*.mat' | head -n 1)" in entry.app.cmd
    assert entry.handler.files_down.data_ids == "data"
    assert entry.handler.files_up.artifact == "model"
    assert entry.hardware.limits.GPU == 1
    assert entry.pool == "gpu"
    assert entry.hardware.timeout == 18000


def shape(entry: Entrypoint) -> dict:
    """What of an entrypoint decides where and how its jobs run, as plain values."""
    handler, res = entry.handler, entry.hardware
    return {
        "image": handler.image_url,
        "gpu_image": handler.gpu_image_url,
        "hardware": (res.limits.MEMORY, res.limits.VCPU, res.limits.GPU),
        "timeout": res.timeout,
        "pool": entry.pool,
        "down": handler.files_down.model_dump(exclude_none=True),
        "up": handler.files_up.model_dump(exclude_none=True),
        "env": entry.app.env,
        "required": entry.required_inputs,
    }


LINEFIT = "localhost/jobcloud/linefit:1"
TORCHFIT = "localhost/jobcloud/torchfit:1"
ALL_DOWN = {"config_id": "config", "data_ids": "data", "artifact_ids": "artifact"}
# application_config.yaml as shipped, entry by entry in file order.
SHIPPED = {
    "linefit/v1/train": {
        "image": LINEFIT, "gpu_image": None, "hardware": (256, 1, 0), "timeout": 600, "pool": "cpu",
        "down": ALL_DOWN, "up": {"output": "output", "log": "log", "artifact": "model"},
        "env": ["LINEFIT_EPOCHS"], "required": ["config_id", "data_ids"],
    },
    "linefit/v1/predict": {
        "image": LINEFIT, "gpu_image": None, "hardware": (256, 1, 0), "timeout": 600, "pool": "cpu",
        "down": {"data_ids": "data", "artifact_ids": "artifact"}, "up": {"output": "output"},
        "env": [], "required": ["data_ids", "artifact_ids"],
    },
    "torchfit/v1/train": {
        "image": TORCHFIT, "gpu_image": "localhost/jobcloud/torchfit-cuda:1", "hardware": (2048, 2, 0),
        "timeout": 3600, "pool": "cpu", "down": {"config_id": "config", "data_ids": "data"},
        "up": {"output": "output", "log": "log", "artifact": "model"},
        "env": ["TORCHFIT_EPOCHS", "TORCHFIT_DEVICE"], "required": ["config_id", "data_ids"],
    },
    "torchfit/v1/predict": {
        "image": TORCHFIT, "gpu_image": None, "hardware": (1024, 1, 0), "timeout": 600, "pool": "cpu",
        "down": {"data_ids": "data", "artifact_ids": "artifact"}, "up": {"output": "output"},
        "env": [], "required": ["data_ids", "artifact_ids"],
    },
}  # fmt: skip
DECODE = {
    "decode/v0_10_1/train": {
        "image": "public.ecr.aws/g0e9g3b1/decode:v0_10_1", "gpu_image": None, "hardware": (8000, 4, 1),
        "timeout": 18000, "pool": "gpu", "down": ALL_DOWN, "up": {"log": "log", "artifact": "model"},
        "env": [], "required": [],
    },
}  # fmt: skip


@pytest.mark.parametrize(("path", "expected"), [(ROOT / "application_config.yaml", SHIPPED), (DATA / "decode_catalog.yaml", DECODE)])
def test_shipped_catalogs_parse_to_exactly_their_entrypoints(path: Path, expected: dict[str, dict]) -> None:
    catalog = load_catalog(path)
    assert {str(ref): shape(entry) for ref, entry in catalog.entries()} == expected
    assert [str(ref) for ref, _ in catalog.entries()] == list(expected)  # in file order


def _broken(old: str, new: str) -> str:
    return (DATA / "decode_catalog.yaml").read_text().replace(old, new)


def test_unknown_key_is_named_with_its_exact_place() -> None:
    with pytest.raises(CatalogError) as exc:
        parse_catalog(_broken("artifact_ids: artifact", "bogus_ids: artifact"))
    assert "decode.v0_10_1.train.handler.files_down: unknown key 'bogus_ids'" in exc.value.problems


def test_missing_required_key() -> None:
    with pytest.raises(CatalogError) as exc:
        parse_catalog(_broken('image_url: "public.ecr.aws/g0e9g3b1/decode:v0_10_1"', ""))
    assert "decode.v0_10_1.train.handler: missing required key 'image_url'" in exc.value.problems


def test_wrong_type_names_the_field() -> None:
    with pytest.raises(CatalogError) as exc:
        parse_catalog(_broken("MEMORY: 8000", "MEMORY: lots"))
    assert any(p.startswith("decode.v0_10_1.train.aws_resources.hardware.MEMORY:") for p in exc.value.problems)


def test_folder_outside_files_is_refused() -> None:
    with pytest.raises(CatalogError) as exc:
        parse_catalog(_broken("data_ids: data", "data_ids: ../etc"))
    assert any("files_down.data_ids" in p and ".." in p for p in exc.value.problems)


def test_every_problem_is_reported_at_once() -> None:
    text = _broken("artifact_ids: artifact", "bogus_ids: artifact").replace("GPU: 1", "GPU: -1")
    with pytest.raises(CatalogError) as exc:
        parse_catalog(text)
    assert len(exc.value.problems) == 2


def test_python_tags_are_refused() -> None:
    with pytest.raises(CatalogError) as exc:
        parse_catalog("a: !!python/object/apply:os.system ['echo pwned']")
    assert "not valid YAML" in str(exc.value)


def test_alias_bomb_is_refused() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdef", "bcdefg"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    with pytest.raises(CatalogError) as exc:
        parse_catalog("\n".join(lines))
    assert "more than" in str(exc.value)


def test_huge_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (5 * 1024 * 1024))
    with pytest.raises(CatalogError) as exc:
        load_catalog(big)
    assert "larger than" in str(exc.value)


def test_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as exc:
        load_catalog(tmp_path / "nope.yaml")
    assert "does not exist" in str(exc.value)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text"])
def test_wrong_top_level(text: str) -> None:
    with pytest.raises(CatalogError):
        parse_catalog(text)


def test_unknown_entrypoint_lists_what_exists() -> None:
    catalog = load_catalog(DATA / "decode_catalog.yaml")
    with pytest.raises(UnknownEntrypointError) as exc:
        catalog.get(EntrypointRef.parse("decode/v0_10_1/predict"))
    assert "known: train" in str(exc.value)
    with pytest.raises(UnknownEntrypointError):
        EntrypointRef.parse("decode/train")


def test_extensions_are_optional_keys() -> None:
    text = _broken("    train:\n", "    train:\n      description: trains\n      cache: true\n      network: none\n")
    entry = parse_catalog(text).get(EntrypointRef.parse("decode/v0_10_1/train"))
    assert entry.description == "trains" and entry.cache and entry.network == "none"


# --- secrets (app.secrets) and retries (aws_resources.retries) --------------------------------

import yaml  # noqa: E402


def _one(app: dict | None = None, resources: dict | None = None):
    entry: dict = {"app": {"cmd": ["true"], **(app or {})}, "handler": {"image_url": "busybox"}}
    if resources is not None:
        entry["aws_resources"] = resources
    return next(parse_catalog(yaml.safe_dump({"a": {"v1": {"e": entry}}})).entries())[1]


def _problems(app: dict | None = None, resources: dict | None = None) -> list[str]:
    with pytest.raises(CatalogError) as exc:
        _one(app, resources)
    return exc.value.problems


def test_secrets_list_form_defaults_the_block_names() -> None:
    entry = _one({"secrets": ["API_TOKEN", "db_pass"]})
    assert entry.app.secrets == {"API_TOKEN": "api-token", "db_pass": "db-pass"}
    assert _one().app.secrets == {}


def test_secrets_mapping_form_names_the_blocks() -> None:
    assert _one({"secrets": {"API_TOKEN": "lab-token-2"}}).app.secrets == {"API_TOKEN": "lab-token-2"}


@pytest.mark.parametrize(
    ("secrets", "problem"),
    [
        (["1TOKEN"], "a.v1.e.app.secrets.1TOKEN: '1TOKEN' is not a valid environment variable name"),
        ({"TOKEN": "Lab_Token"}, "a.v1.e.app.secrets.TOKEN: 'Lab_Token' is not a valid Prefect block name"),
        (["A", "A"], "a.v1.e.app.secrets: a secret variable is listed twice"),
        ("TOKEN", "a.v1.e.app.secrets: secrets must be a list of variable names or a mapping"),
        ([1], "a.v1.e.app.secrets: secrets must be a list of variable names or a mapping"),
    ],
)
def test_bad_secrets_are_named(secrets, problem: str) -> None:
    (only,) = _problems({"secrets": secrets})
    assert only.startswith(problem), only


def test_a_variable_is_plain_or_secret_not_both() -> None:
    (only,) = _problems({"env": ["TOKEN", "LR"], "secrets": ["TOKEN"]})
    assert only.startswith("a.v1.e.app: TOKEN in both env and secrets")


def test_secrets_are_validated_in_a_job_request() -> None:
    from jobcloud.blocks.errors import ParameterError
    from jobcloud.flows.request import JobRequest, secret_blocks, validate_request

    entry = _one({"env": ["LR"], "secrets": ["API_TOKEN"]})
    request = validate_request(entry, JobRequest(secrets={"API_TOKEN": "other-token"}))
    assert secret_blocks(entry, request) == {"API_TOKEN": "other-token"}
    assert secret_blocks(entry, JobRequest()) == {"API_TOKEN": "api-token"}
    with pytest.raises(ParameterError, match="NOPE not declared.*declared: API_TOKEN"):
        validate_request(entry, JobRequest(secrets={"NOPE": "x"}))
    with pytest.raises(ParameterError, match="not a Prefect block name"):
        validate_request(entry, JobRequest(secrets={"API_TOKEN": "Bad Name"}))
    with pytest.raises(ParameterError, match="not allowed"):  # a secret is no plain env variable
        validate_request(entry, JobRequest(env={"API_TOKEN": "x"}))


def test_secret_values_stay_out_of_the_spec_dump() -> None:
    from pydantic import SecretStr

    from jobcloud.flows.container_spec import ContainerSpec

    spec = ContainerSpec(image="i", command=["c"], host_files="/tmp/x", environment={"LR": "1"})
    spec = spec.model_copy(update={"secret_environment": {"TOKEN": SecretStr("s3cr3t")}})
    assert "s3cr3t" not in repr(spec) and "s3cr3t" not in spec.model_dump_json()
    assert "secret_environment" not in spec.model_dump()
    assert spec.create_kwargs()["environment"] == {"LR": "1", "TOKEN": "s3cr3t"}


def test_retries_default_and_bounds() -> None:
    res = _one().hardware
    assert (res.retries, res.retry_delay_s) == (0, 5.0)
    res = _one(resources={"retries": 10, "retry_delay_s": 0.5}).hardware
    assert (res.retries, res.retry_delay_s) == (10, 0.5)
    assert _problems(resources={"retries": 11}) == ["a.v1.e.aws_resources.retries: Input should be less than or equal to 10"]
    assert _problems(resources={"retries": -1, "retry_delay_s": -1}) == [
        "a.v1.e.aws_resources.retries: Input should be greater than or equal to 0",
        "a.v1.e.aws_resources.retry_delay_s: Input should be greater than or equal to 0",
    ]
    assert _problems(resources={"retries": "often"})[0].startswith("a.v1.e.aws_resources.retries:")

"""JobCloud's settings: every `JOBCLOUD_*` environment variable JobCloud reads, in one model.

`JobCloudSettings` has one field per variable (`pool_types` is `JOBCLOUD_POOL_TYPES`; the HTTP
API's group `api.keys_file` is `JOBCLOUD_API_KEYS_FILE`), with its type, default and meaning,
also for the values JobCloud passes to its own child processes (described "set by JobCloud,
not by hand"). Settings are read where they are used: `get_settings()` builds the model from
the environment on each call (tests and the worker change the environment), and no module
reads them when it is imported. A bad value is a `SettingsError` (a `UserError`: exit 2 on the
command line) that names the variable. Code that writes a variable into a child's environment
takes its name from `env_name`. docs/settings.md's table is generated from this model
(`python -m jobcloud.blocks.settings_doc`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, SecretStr, ValidationError, ValidationInfo
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from jobcloud.blocks.errors import UserError

PREFIX = "JOBCLOUD_"
MIB = 1024 * 1024
ZOMBIE_MIN_S = 60  # Prefect's smallest flow-run heartbeat interval (30 s) plus one lost beat
# The error type of the checks below, whose messages already name the variable and value.
_NAMED_ERROR = "jobcloud_setting"
INTERNAL = "Set by JobCloud, not by hand."


class SettingsError(UserError):
    """A `JOBCLOUD_*` variable has a value JobCloud cannot use."""


def _home() -> Path:
    return Path.home() / ".jobcloud"


def _one_is_on(value: object) -> object:
    # JobCloud has always read these flags as "on when the text is exactly 1".
    return value == "1" if isinstance(value, str) else value


def _zero_is_off(value: object) -> object:
    # ...and these as "on unless the text is exactly 0".
    return value != "0" if isinstance(value, str) else value


ON_WHEN_ONE = "flag: `1` is on"
OFF_WHEN_ZERO = "flag: `0` is off"
OnWhenOne = Annotated[bool, BeforeValidator(_one_is_on)]
OffWhenZero = Annotated[bool, BeforeValidator(_zero_is_off)]


def _named_error(message: str) -> PydanticCustomError:
    return PydanticCustomError(_NAMED_ERROR, "{message}", {"message": message})


def _number_between(low: float, high: float) -> Callable[[object, ValidationInfo], object]:
    """A check of a number in [low, high] whose message names the variable and its text."""

    def check(value: object, info: ValidationInfo) -> object:
        name = env_name(info.field_name or "")
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise _named_error(f"{name}={value!r} is not a number") from None
        if not low <= number <= high:
            raise _named_error(f"{name}={value!r} must be between {low:g} and {high:g}")
        return number

    return check


def _whole_seconds(low: int, why: str) -> Callable[[object, ValidationInfo], object]:
    """A check of a whole number of seconds, at least ``low`` (``why``: the reason for it)."""

    def check(value: object, info: ValidationInfo) -> object:
        name = env_name(info.field_name or "")
        raw = value.strip() if isinstance(value, str) else value
        try:
            seconds = int(raw)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise _named_error(f"{name}={raw!r} is not a whole number of seconds") from None
        if seconds < low:
            raise _named_error(f"{name}={seconds}: must be at least {low} s ({why})")
        return seconds

    return check


def _setting(
    default: Any = None,
    *,
    meaning: str,
    used_by: str,
    shown_default: str | None = None,
    shown_type: str | None = None,
    internal: bool = False,
    **kwargs: Any,
) -> Any:
    """A field with what docs/settings.md shows of it: who reads it and, where the plain
    default or type says too little, how they are shown."""
    extra: dict[str, Any] = {"used_by": used_by}
    if internal and shown_default is None:
        shown_default = "set by JobCloud"
    if shown_default is not None:
        extra["shown_default"] = shown_default
    if shown_type is not None:
        extra["shown_type"] = shown_type
    description = f"{meaning} {INTERNAL}" if internal else meaning
    if "default_factory" in kwargs:
        return Field(description=description, json_schema_extra=extra, **kwargs)
    return Field(default, description=description, json_schema_extra=extra, **kwargs)


class ApiSettings(BaseModel):
    """The HTTP API's settings, `JOBCLOUD_API_*` (docs/api.md). Every limit has a default that
    suits one lab; a platform sets its own."""

    keys_block: str | None = _setting(
        meaning='Name of the Prefect Secret block holding the API keys as JSON `{"<token>": {"user": "<name>", "role": "user"|"admin"}}`',
        used_by="API",
    )
    keys_file: Path | None = _setting(meaning="A JSON file of the same shape (for tests and single-machine set-ups)", used_by="API")
    max_body_bytes: int = _setting(
        1 * MIB, meaning="Largest request body outside file uploads (JSON requests)", used_by="API", shown_default="`1048576` (1 MiB)", gt=0
    )
    max_upload_bytes: int = _setting(
        64 * 1024 * MIB,
        meaning="Largest single file upload (streamed to disk, never held in memory)",
        used_by="API",
        shown_default="`68719476736` (64 GiB)",
        gt=0,
    )
    rate_per_minute: int = _setting(600, meaning="Requests a user may make per minute (429 beyond)", used_by="API", gt=0)
    max_active_jobs: int = _setting(20, meaning="Jobs a user may have queued or running at once (429 beyond)", used_by="API", gt=0)
    upload_dir: Path | None = _setting(
        meaning="Where uploads to an S3 or GCS job store are spooled before they enter it (a local store receives "
        "them in place: a hidden file inside the store, renamed when whole)",
        used_by="API",
        shown_default="the system temp folder",
    )
    core_token: SecretStr | None = _setting(
        meaning="Bearer token for a Swiss AI Center core engine (`jobcloud api register --token`)", used_by="CLI"
    )
    state_dir: Path | None = _setting(
        meaning="Folder of what all API processes of one deployment share (`api serve --workers N`, several servers): "
        "the rate-limit counts (SQLite) and the lock of the active-jobs bound; a local disk, not NFS",
        used_by="API",
        shown_default="`$JOBCLOUD_HOME/api`",
    )
    job_refresh_s: float = _setting(
        1.0,
        meaning="How old `GET /jobs/{id}` of a queued or running job may be: each API process asks Prefect about "
        "one job at most once per this many seconds, however many clients poll it",
        used_by="API",
        ge=0,
        le=60,
    )
    final_job_cache_s: float = _setting(
        300.0,
        meaning="How long `GET /jobs/{id}` of an ended job (Completed, Failed, Cancelled, Crashed...) is served from "
        "memory without asking Prefect (a run restarted from Prefect's UI shows after at most this long; 0: no cache)",
        used_by="API",
        ge=0,
    )
    presign_expiry_s: int = _setting(
        3600,
        meaning="Lifetime of the presigned URLs of `POST /files/{key}:upload-url` and `GET /files/{key}:download-url` (S3 and GCS stores)",
        used_by="API",
        gt=0,
        le=7 * 24 * 3600,
    )
    tes_images: str | None = _setting(
        meaning="Images a GA4GH TES executor may name, comma-separated `fnmatch` patterns (`alpine`, `ubuntu:*`, "
        "`quay.io/biocontainers/*`; a name without a tag also matches as `NAME:latest`), `*` for any image; another "
        "image is a 400 naming it ([tes.md](tes.md#who-may-run-what))",
        used_by="API",
        shown_default="the catalog's images",
    )
    tes_input_urls: str | None = _setting(
        meaning="URLs outside the job store that TES inputs may be read from, comma-separated `fnmatch` patterns "
        "(`https://data.example.org/*`, `s3://public-data/*`: other buckets are read with the job store's "
        "credentials), `*` for any public http(s) URL and any bucket. A loopback, link-local, metadata or "
        "private-network address is reached only through a pattern naming its host literally "
        "([tes.md](tes.md#who-may-run-what))",
        used_by="API",
        shown_default="none (job-store URLs only)",
    )
    tes_input_max_bytes: int = _setting(
        10 * 1024 * MIB,
        meaning="Largest TES input read from one URL (the task ends SYSTEM_ERROR beyond)",
        used_by="API",
        shown_default="`10737418240` (10 GiB)",
        gt=0,
    )
    tes_timeout_s: int = _setting(
        24 * 3600,
        meaning="Seconds each executor of a GA4GH TES task may run when the task sets no `backend_parameters.timeout_s` "
        "(then its container is stopped and the task ends SYSTEM_ERROR); a task may ask for longer",
        used_by="API",
        shown_default="`86400` (24 h)",
        gt=0,
    )
    oidc_issuer: str | None = _setting(
        meaning="An OIDC issuer whose JWTs the API accepts as bearer tokens beside the API keys (`iss` must be exactly "
        "this); its keys come from `JOBCLOUD_API_OIDC_JWKS_URL` or its discovery document "
        "([api.md](api.md#oidc-tokens))",
        used_by="API",
        shown_default="none (API keys only)",
    )
    oidc_audience: str | None = _setting(
        meaning="The `aud` a token must carry (the API's client id at the issuer); required with `JOBCLOUD_API_OIDC_ISSUER`",
        used_by="API",
    )
    oidc_jwks_url: str | None = _setting(
        meaning="The issuer's JWKS (its signing keys)",
        used_by="API",
        shown_default="`jwks_uri` of `<issuer>/.well-known/openid-configuration`",
    )
    oidc_user_claim: str = _setting(
        "preferred_username",
        meaning="The claim that holds the user name (a plain name: it becomes `users/<name>/` and `user:<name>`)",
        used_by="API",
    )
    oidc_groups_claim: str = _setting("groups", meaning="The claim that lists the user's groups", used_by="API")
    oidc_admin_group: str | None = _setting(
        meaning="Members of this group are admins (see every user's files, jobs and tasks)", used_by="API", shown_default="none"
    )
    oidc_algorithms: str = _setting(
        "RS256,ES256,PS256,EdDSA", meaning="Signature algorithms accepted, comma-separated (never `none` or HMAC)", used_by="API"
    )
    oidc_jwks_cache_s: float = _setting(
        600.0,
        meaning="How long the issuer's keys are kept before they are fetched again (a token with an unknown key id "
        "fetches them at once, at most every 30 s)",
        used_by="API",
        gt=0,
    )
    oidc_leeway_s: float = _setting(30.0, meaning="Clock skew allowed on `exp`, `nbf` and `iat`", used_by="API", ge=0, le=300)


class JobCloudSettings(BaseSettings):
    """Every setting has a default that works on one machine with no cloud account. An empty
    variable counts as unset."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        extra="ignore",
        env_ignore_empty=True,
        # JOBCLOUD_API_KEYS_FILE -> api.keys_file: one split after the group's name only.
        env_nested_delimiter="_",
        env_nested_max_split=1,
    )

    # -- where things are --------------------------------------------------------------------
    storage: str | None = _setting(
        meaning="The job store: a folder, `file://…`, `s3://bucket/prefix`, `gs://bucket/prefix`, or `block:<name>` "
        "(a [`JobStoreBlock`](job-stores.md#the-jobstoreblock)); must be the same everywhere. `jobcloud deploy` writes "
        "its value into the work pools, and a worker's jobs take it from there, not from the worker host "
        "([many-hosts.md](many-hosts.md#2-start-workers)); a folder there fits one host only",
        used_by="CLI, deploy, job",
        shown_default="`$JOBCLOUD_HOME/store` (`~/.jobcloud/store`)",
    )
    config: Path = _setting(
        Path("application_config.yaml"),
        meaning="The catalog. `jobcloud deploy` writes each entrypoint's whole definition into its deployment "
        "(`JOBCLOUD_ENTRYPOINT`), so worker hosts and containers need no catalog file; only `run --local` (and a "
        "deployment made by an older release) reads it when a job starts",
        used_by="CLI, deploy, `run --local`",
        shown_default="`./application_config.yaml`",
    )
    entrypoint: str | None = _setting(
        meaning="The entrypoint's definition (JSON) in the deployment's `env` job variable, written by `jobcloud deploy`; "
        "the flow run builds its flow from it ([many-hosts.md](many-hosts.md)).",
        used_by="job",
        shown_default="set by `jobcloud deploy`",
        internal=True,
    )
    pool_types: str | None = _setting(
        meaning="Worker type of each pool, `cpu=docker,gpu=kubernetes`: `jobcloud`, `docker`, `kubernetes`, `ecs`, "
        "`cloud-run-v2`, `vertex-ai`; `--pool-type` wins. A pool named nowhere keeps the type it has "
        "([many-hosts.md](many-hosts.md))",
        used_by="deploy, `jobcloud check`",
        shown_default="none (`jobcloud`)",
    )
    runner: Literal["engine", "process"] = _setting(
        "engine",
        meaning="`engine`: the flow starts the application's container (host mode); `process`: the flow runs inside "
        "the application's image and runs the command as a subprocess (in-container mode; set by the job templates "
        "of Prefect's own worker types)",
        used_by="job",
    )
    files_dir: Path = _setting(
        Path("/files"), meaning="In-container mode: where inputs are staged and outputs uploaded from", used_by="job"
    )
    home: Path = _setting(
        default_factory=_home,
        meaning="JobCloud's own folder: default store, work folders, local server state and log",
        used_by="all",
        shown_default="`~/.jobcloud`",
    )
    host_name: str = _setting(
        default_factory=socket.gethostname,
        meaning="This host's name on its job containers (label `io.jobcloud.host`): worker hosts sharing one engine "
        "tell their containers apart",
        used_by="job",
        shown_default="the host name",
    )
    workdir: Path | None = _setting(
        meaning="Where each job's `/files` folder is prepared on the worker host",
        used_by="job",
        shown_default="`$JOBCLOUD_HOME/work`",
    )
    keep_workdir: bool = _setting(False, meaning="Keep a job's work folder after it ends (debugging)", used_by="job")
    pipelines: Path | None = _setting(meaning="A YAML file of extra pipelines ([many-hosts.md](many-hosts.md#pipelines))", used_by="CLI")
    images_public: OnWhenOne = _setting(
        False,
        meaning="`1`: build images from public bases (a registry is reachable), like `--public`",
        used_by="`jobcloud images build`",
        shown_default="`0`",
        shown_type=ON_WHEN_ONE,
    )
    assume_gpu: OnWhenOne = _setting(
        False,
        meaning="`1`: skip the GPU check, for engines whose GPU support cannot be probed ([gpu-hosts.md](gpu-hosts.md))",
        used_by="job",
        shown_default="`0`",
        shown_type=ON_WHEN_ONE,
    )
    # -- the worker ------------------------------------------------------------------------------
    warm_start: OffWhenZero = _setting(
        True,
        meaning="`0`: start each run cold (`python -m prefect.engine`) instead of forking a warm child",
        used_by="worker",
        shown_default="`1`",
        shown_type=OFF_WHEN_ZERO,
    )
    worker_stop_grace_s: float = _setting(
        20.0, meaning="After SIGTERM, how long running jobs may go on before they are cancelled", used_by="worker"
    )
    stop_grace_s: Annotated[int, BeforeValidator(_number_between(0, 600))] = _setting(
        10,
        meaning="Whole seconds a job's command past its timeout gets after SIGTERM, then SIGKILL, 0 to 600 (the engine "
        "takes whole seconds; the suite sets 1: "
        "its commands ignore SIGTERM, so every timeout would cost the whole grace)",
        used_by="job",
    )
    run_stop_grace_s: float = _setting(
        10.0,
        meaning="A run's process group gets this long after SIGTERM, then SIGKILL, when the fork server stops",
        used_by="worker",
    )
    sweep_interval_s: float = _setting(
        60.0, meaning="Seconds between sweeps for containers and work folders of ended jobs", used_by="worker"
    )
    zombie_after_s: Annotated[
        int, BeforeValidator(_whole_seconds(ZOMBIE_MIN_S, "Prefect's 30 s flow-run heartbeat plus one lost beat"))
    ] = _setting(
        90,
        meaning=f"The `jobcloud-zombie-runs` automation crashes runs silent this long (at least {ZOMBIE_MIN_S}: "
        "Prefect's 30 s heartbeat plus one lost beat; less crashes healthy runs)",
        used_by="deploy",
    )
    # -- a job -----------------------------------------------------------------------------------
    submit_patience_s: Annotated[float, BeforeValidator(_number_between(0, 3600))] = _setting(
        600.0,
        meaning="Seconds a submission (`jobcloud run`, the Python API, the HTTP API) keeps asking a Prefect server that "
        "refuses it for load (503, 429, timeouts: a SQLite server under many clients), with random waits between tries, "
        "before it gives up, 0 to 3600; a try started in time may run longer by the Prefect client's own retries "
        "(`PREFECT_CLIENT_MAX_RETRIES`)",
        used_by="CLI, Python API, API",
    )
    guard_patience_s: float = _setting(
        600.0, meaning="How long a job's guard keeps retrying an engine or server that is away", used_by="job"
    )
    cancel_poll_s: float = _setting(
        1.0, meaning="How often a running job asks the server for its run's state (a cancel, a run ended elsewhere)", used_by="job"
    )
    fence_after_s: Annotated[float, BeforeValidator(_number_between(0, 86400))] = _setting(
        45.0,
        meaning="Seconds a job goes on without reaching the Prefect server (monotonic clock) before it fences itself: stops "
        "its container and uploads nothing, so that a retry elsewhere never races it; keep it below JOBCLOUD_ZOMBIE_AFTER_S "
        "minus 30; 0 turns fencing off",
        used_by="job",
    )
    infra_attempts: Annotated[int, BeforeValidator(_number_between(1, 10))] = _setting(
        3, meaning="Attempts of a container run after infrastructure failures (engine, image pull), 1 to 10", used_by="job"
    )
    infra_retry_delay_s: Annotated[float, BeforeValidator(_number_between(0, 600))] = _setting(
        2.0, meaning="First wait between those attempts, doubled each time, 0 to 600", used_by="job"
    )
    # -- job arrays ------------------------------------------------------------------------------
    array_max: Annotated[int, BeforeValidator(_number_between(1, 1_000_000))] = _setting(
        10_000, meaning="Most elements one array may have (`jobcloud run --array`); more is refused", used_by="CLI, API"
    )
    array_shard_size: Annotated[int, BeforeValidator(_number_between(1, 1_000_000))] = _setting(
        1_000,
        meaning="Elements per flow run of an array when `--shards` is not given: one shard per this many elements",
        used_by="CLI, API",
    )
    # -- passed by JobCloud to its own processes ---------------------------------------------------
    pool: str | None = _setting(meaning="The pool a run came from (the pool's job template).", used_by="job", internal=True)
    warm_socket: str | None = _setting(
        meaning="The fork server's socket, for warm starts of flow runs.", used_by="worker, job", internal=True
    )
    watch_cancel: OnWhenOne = _setting(
        False,
        meaning="Set by `run --local` and in-container pools; a job now watches its run on every host (JOBCLOUD_CANCEL_POLL_S).",
        used_by="job",
        shown_default="`0` (`1` set by JobCloud)",
        shown_type=ON_WHEN_ONE,
        internal=True,
    )
    # -- notifications (docs/notifications.md) ------------------------------------------------------
    notify_webhook_url: str | None = _setting(meaning="URL that gets a JSON POST per notification", used_by="deploy")
    notify_email_to: str | None = _setting(meaning="Comma-separated recipient addresses", used_by="deploy")
    notify_email_from: str = _setting("jobcloud@localhost", meaning="Sender address", used_by="deploy")
    notify_on: str = _setting("finished,error", meaning="Which ends notify: `finished`, `error`, or both", used_by="deploy")
    smtp_host: str | None = _setting(meaning="SMTP server host (needed for email)", used_by="deploy")
    smtp_port: int | None = _setting(meaning="SMTP port", used_by="deploy", shown_default="by security: 587, 465, 25")
    smtp_security: Literal["starttls", "ssl", "none"] = _setting("starttls", meaning="How to talk to the SMTP server", used_by="deploy")
    smtp_username: str | None = _setting(meaning="SMTP login, if the server wants one", used_by="deploy")
    smtp_password: SecretStr | None = _setting(meaning="SMTP password", used_by="deploy")
    # -- the HTTP API ---------------------------------------------------------------------------------
    api: ApiSettings = Field(default_factory=ApiSettings, description="The HTTP API's settings (`JOBCLOUD_API_*`).")

    @property
    def storage_url(self) -> str:
        """The job store's URL: `storage`, else a folder under `home`."""
        return self.storage or str(self.home / "store")

    @property
    def work_root(self) -> Path:
        """Where job work folders go: `workdir`, else a folder under `home`."""
        return self.workdir or self.home / "work"


# The groups of fields whose variables share a prefix (`JOBCLOUD_API_*`).
GROUPS: dict[str, type[BaseModel]] = {"api": ApiSettings}


def env_name(field: str) -> str:
    """The environment variable of setting ``field``: `env_name("pool")` is `JOBCLOUD_POOL`,
    `env_name("api.keys_file")` is `JOBCLOUD_API_KEYS_FILE`. KeyError for no such setting."""
    head, _, rest = field.partition(".")
    model: type[BaseModel] = GROUPS[head] if rest else JobCloudSettings
    if (rest or head) not in model.model_fields or (not rest and head in GROUPS):
        raise KeyError(f"no JobCloud setting {field!r}")
    return PREFIX + field.replace(".", "_").upper()


def settings_fields() -> Iterator[tuple[str, FieldInfo]]:
    """Every setting as (variable name, its field), in the model's order."""
    for name, info in JobCloudSettings.model_fields.items():
        if name in GROUPS:
            for sub, sub_info in GROUPS[name].model_fields.items():
                yield env_name(f"{name}.{sub}"), sub_info
        else:
            yield env_name(name), info


def _problem(error: Any) -> str:
    if error["type"] == _NAMED_ERROR:
        return str(error["msg"])
    # The location's field names (a union adds the member's name after them).
    loc = [str(part) for part in error["loc"]]
    path = ".".join(loc[:2]) if loc and loc[0] in GROUPS and len(loc) > 1 else (loc[0] if loc else "")
    try:
        name = env_name(path)
    except KeyError:
        name = PREFIX + "_".join(loc).upper()
    # The value is left out: it may be a secret.
    return f"{name}: {error['msg']}"


# The settings of the environment last seen: a job reads them dozens of times (an array's
# elements on several threads), and building them costs ~1 ms each time. Keyed by every
# variable they can depend on, so a changed environment (tests, a CLI that sets one) is read anew.
_last: tuple[tuple[tuple[str, str], ...], JobCloudSettings] | None = None


def get_settings() -> JobCloudSettings:
    """Settings as the environment gives them now (read anew whenever it changed: tests change it).

    Raises `SettingsError` naming each variable whose value cannot be used."""
    global _last
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(PREFIX) or k == "HOME"))
    last = _last
    if last is not None and last[0] == key:
        return last[1]
    try:
        settings = JobCloudSettings()
        _last = (key, settings)
        return settings
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise SettingsError(f"{problems}. Set a valid value or unset the variable (docs/settings.md)") from None

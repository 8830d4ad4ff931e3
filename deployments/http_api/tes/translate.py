"""A TES task document -> the `TesPlan` its flow runs, with every refusal a 400 or 403 that
names the field (`inputs[0].url`), before anything is created.

Job-store URLs: the store's own URL base (`service-info`'s `storage`): `file:///<root>/<key>`
(or the bare path `/<root>/<key>`) for a local store, `s3://<bucket>/<prefix>/<key>`,
`gs://...`. A user reads and writes only `users/<name>/...` (an admin anything). An input URL
outside the store is not refused: an http(s) URL the allow-list names is read by the flow; any
other one makes a task that ends SYSTEM_ERROR saying why, as other TES servers do for an input
they cannot fetch. Executors' images are checked against the image allow-list (`rules.py`).
"""

from __future__ import annotations

import math
from typing import Any

from jobcloud.blocks.errors import UnsafeKeyError
from jobcloud.blocks.keys import check_key
from jobcloud.blocks.store.job_store import JobStore
from jobcloud.blocks.url_policy import UrlPolicyError
from jobcloud.deployments.http_api.auth import Principal
from jobcloud.deployments.http_api.errors import ApiError
from jobcloud.deployments.http_api.services import user_root
from jobcloud.deployments.http_api.tes.models import TesFileType, TesTask
from jobcloud.deployments.http_api.tes.rules import TesRules
from jobcloud.flows.tes_plan import ExecutorPlan, InputPlan, OutputPlan, TesPlan, check_container_path, has_wildcards, static_folder

# Inline input content: TES asks for at least 128 KiB.
MAX_CONTENT_BYTES = 1024 * 1024
# backend_parameters JobCloud understands (keys are case-insensitive, as TES says).
BACKEND_PARAMETERS = {"gpu": "GPUs for the task (an integer; > 0 runs it on the gpu pool)", "timeout_s": "seconds each executor may run"}
FIX_URL = "name a file of yours in the job store (GET /ga4gh/tes/v1/service-info lists its URL) or give content"


def store_base(store: JobStore) -> str:
    """The URL every key of ``store`` starts with, as TES clients name files."""
    if store.is_local:
        return f"file://{store.root}"
    scheme = store.url.split("://", 1)[0] if "://" in store.url else "file"
    return f"{scheme}://{store.root}"


def key_of_url(url: str, store: JobStore) -> str | None:
    """The job-store key ``url`` names, or None when it is outside the store."""
    base = store_base(store)
    candidates = [base + "/"]
    if store.is_local:
        candidates.append(store.root.rstrip("/") + "/")  # a bare absolute path under the root
    for start in candidates:
        if url.startswith(start):
            rest = url[len(start) :]
            try:
                return check_key(rest)
            except UnsafeKeyError:
                return None
    return None


def url_of_key(key: str, store: JobStore) -> str:
    return f"{store_base(store)}/{key}"


def _owned_key(url: str, store: JobStore, who: Principal, field: str) -> str | None:
    """``url``'s key if the caller may use it; None outside the store; 403 in another's area."""
    key = key_of_url(url, store)
    if key is None:
        return None
    if not who.is_admin and not key.startswith(user_root(who.user) + "/"):
        raise ApiError(403, f"{field}: {url!r} is outside your area of the job store", field, f"use keys under {user_root(who.user)}/")
    return key


def _path(value: str, field: str) -> str:
    problem = check_container_path(value)
    if problem:
        raise ApiError(400, f"{field}: {value!r} {problem}", field, "give an absolute path inside the container, e.g. /data/file1")
    return value


def backend_parameters(task: TesTask) -> dict[str, str]:
    """The supported backend_parameters (lower-case keys); unsupported ones are dropped (TES:
    not stored), or refused with a 400 naming them when backend_parameters_strict is set."""
    res = task.resources
    given = (res.backend_parameters if res else None) or {}
    known = {k.lower(): v for k, v in given.items() if k.lower() in BACKEND_PARAMETERS}
    unknown = sorted(k for k in given if k.lower() not in BACKEND_PARAMETERS)
    if unknown and res is not None and res.backend_parameters_strict:
        raise ApiError(
            400,
            f"resources.backend_parameters: {', '.join(unknown)} not supported",
            f"resources.backend_parameters.{unknown[0]}",
            f"supported: {', '.join(BACKEND_PARAMETERS)} (or unset backend_parameters_strict)",
        )
    return known


def _int_parameter(params: dict[str, str], name: str, low: int) -> int | None:
    if name not in params:
        return None
    try:
        value = int(params[name])
    except ValueError:
        value = low - 1
    if value < low:
        field = f"resources.backend_parameters.{name}"
        raise ApiError(400, f"{field}: {params[name]!r} is not an integer >= {low}", field, BACKEND_PARAMETERS[name])
    return value


def plan_of(task: TesTask, store: JobStore, who: Principal, rules: TesRules, default_timeout_s: int | None = None) -> TesPlan:
    """The plan of ``task`` for ``who`` under ``rules``; ApiError (400/403) for what is malformed
    or forbidden. ``default_timeout_s`` bounds each executor of a task that names no
    `timeout_s` (`JOBCLOUD_API_TES_TIMEOUT_S`): no task runs forever unless it asks to."""
    inputs = [_input(i, item, store, who, rules) for i, item in enumerate(task.inputs or [])]
    seen: set[str] = set()
    for i, item in enumerate(inputs):
        if item.path in seen:
            raise ApiError(400, f"inputs[{i}].path: {item.path!r} is given twice", f"inputs[{i}].path")
        seen.add(item.path)
    outputs = [_output(i, item, store, who) for i, item in enumerate(task.outputs or [])]
    executors = [_executor(i, ex, rules) for i, ex in enumerate(task.executors)]
    volumes = [_path(v, f"volumes[{i}]") for i, v in enumerate(task.volumes or [])]
    params = backend_parameters(task)
    res = task.resources
    return TesPlan(
        executors=executors,
        inputs=inputs,
        outputs=outputs,
        volumes=volumes,
        cpu=float(res.cpu_cores) if res and res.cpu_cores else None,
        memory_mb=math.ceil(res.ram_gb * 1024) if res and res.ram_gb else None,
        disk_gb=res.disk_gb if res and res.disk_gb else None,
        gpu=_int_parameter(params, "gpu", 0) or 0,
        timeout_s=_int_parameter(params, "timeout_s", 1) or default_timeout_s,
        store_url=store_base(store),
        url_policy=rules.url_policy,
    )


def _input(i: int, item: Any, store: JobStore, who: Principal, rules: TesRules) -> InputPlan:
    field = f"inputs[{i}]"
    path = _path(item.path, f"{field}.path")
    kind = (item.type or TesFileType.FILE).value
    if item.content is not None:  # TES: with content, url is ignored
        if kind == "DIRECTORY":
            raise ApiError(400, f"{field}.content: a DIRECTORY input cannot have content", f"{field}.type")
        if len(item.content.encode()) > MAX_CONTENT_BYTES:
            raise ApiError(400, f"{field}.content: more than {MAX_CONTENT_BYTES} bytes", f"{field}.content", "put it in the job store")
        if path.rsplit("/", 1)[0] == "":
            raise ApiError(400, f"{field}.path: {path!r} is directly under '/'", f"{field}.path", "put it in a folder, e.g. /data")
        return InputPlan(path=path, type="FILE", content=item.content)
    if not item.url:
        raise ApiError(400, f"{field}: give url or content", f"{field}.url", FIX_URL)
    if kind == "FILE" and path.rsplit("/", 1)[0] == "":
        raise ApiError(400, f"{field}.path: {path!r} is directly under '/'", f"{field}.path", "put it in a folder, e.g. /data")
    key = _owned_key(item.url, store, who, f"{field}.url")
    if key is not None:
        return InputPlan(path=path, type=kind, key=key)
    return _url_input(field, path, kind, item.url, rules, store, who)


def _url_input(field: str, path: str, kind: str, url: str, rules: TesRules, store: JobStore, who: Principal) -> InputPlan:
    """An input outside the job store: read by the flow when the allow-list names it, else a
    task that ends SYSTEM_ERROR with the reason (not a refusal: TES servers create it)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("http", "https") and kind == "DIRECTORY":
        raise ApiError(400, f"{field}.type: an {scheme} URL input is a FILE", f"{field}.type", "list each file as its own input")
    try:
        flat = rules.url_policy.check(url)
    except UrlPolicyError as exc:
        return InputPlan(path=path, type=kind, foreign_url=url, why=str(exc))
    # A spelling of a job-store URL the store's own form missed (`S3://BUCKET/...`) is still
    # the job store: another user's area stays theirs even under a pattern like `s3://*`.
    key = _owned_key(flat, store, who, f"{field}.url")
    if key is not None:
        return InputPlan(path=path, type=kind, key=key)
    return InputPlan(path=path, type=kind, url=flat)


def _output(i: int, item: Any, store: JobStore, who: Principal) -> OutputPlan:
    field = f"outputs[{i}]"
    path = _path(item.path, f"{field}.path")
    kind = (item.type or TesFileType.FILE).value
    if has_wildcards(path):
        return _pattern_output(field, item, path, kind, store, who)
    if kind == "FILE" and path.rsplit("/", 1)[0] == "":
        raise ApiError(400, f"{field}.path: {path!r} is directly under '/'", f"{field}.path", "put it in a folder, e.g. /data")
    key = _owned_key(item.url, store, who, f"{field}.url")
    if key is None:
        raise ApiError(400, f"{field}.url: {item.url!r} is not in the job store", f"{field}.url", FIX_URL)
    return OutputPlan(path=path, type=kind, key=key, url=item.url)


def _pattern_output(field: str, item: Any, path: str, kind: str, store: JobStore, who: Principal) -> OutputPlan:
    """An output whose path has wildcards: its url is a folder of the job store, and
    path_prefix (required) a wildcard-free start of the path that each match loses."""
    folder = static_folder(path)
    if folder == "/":
        raise ApiError(
            400, f"{field}.path: {path!r} matches directly under '/'", f"{field}.path", "put the files in a folder, e.g. /data/*.txt"
        )
    prefix = item.path_prefix
    fix = f"give the part of the path before its first wildcard, e.g. {folder + '/'!r}"
    if not prefix:
        raise ApiError(400, f"{field}.path_prefix: required when the path has wildcards", f"{field}.path_prefix", fix)
    base = prefix.rstrip("/")
    # Whole folders only: a match less the prefix is a relative path, never a piece of a name.
    if not path.startswith(prefix) or not (base == "" or folder == base or folder.startswith(base + "/")):
        raise ApiError(
            400, f"{field}.path_prefix: {prefix!r} is not a folder of {path!r} before its first wildcard", f"{field}.path_prefix", fix
        )
    key = _owned_key(item.url.rstrip("/"), store, who, f"{field}.url")
    if key is None:
        raise ApiError(400, f"{field}.url: {item.url!r} is not a folder of the job store", f"{field}.url", FIX_URL)
    return OutputPlan(path=path, type=kind, key=key, url=item.url, path_prefix=prefix)


def _executor(i: int, ex: Any, rules: TesRules) -> ExecutorPlan:
    field = f"executors[{i}]"
    rules.check_image(ex.image, f"{field}.image")
    for name in ("workdir", "stdin", "stdout", "stderr"):
        value = getattr(ex, name)
        if value is not None:
            _path(value, f"{field}.{name}")
    for name in ("stdout", "stderr"):
        value = getattr(ex, name)
        if value is not None and value.rsplit("/", 1)[0] == "":
            raise ApiError(400, f"{field}.{name}: {value!r} is directly under '/'", f"{field}.{name}", "e.g. /outputs/stdout.txt")
    return ExecutorPlan(
        image=ex.image,
        command=ex.command,
        workdir=ex.workdir,
        stdin=ex.stdin,
        stdout=ex.stdout,
        stderr=ex.stderr,
        env=ex.env or {},
        ignore_error=bool(ex.ignore_error),
    )


def stored_document(task: TesTask) -> dict[str, Any]:
    """The task as kept with its flow run (and answered by GET): what the client sent, without
    the server's fields and without unsupported backend_parameters (TES: not stored)."""
    doc = task.model_dump(mode="json", exclude_none=True, exclude={"id", "state", "logs", "creation_time"})
    res = doc.get("resources")
    if res and "backend_parameters" in res:
        kept = {k: v for k, v in res["backend_parameters"].items() if k.lower() in BACKEND_PARAMETERS}
        if kept:
            res["backend_parameters"] = kept
        else:
            del res["backend_parameters"]
    return doc

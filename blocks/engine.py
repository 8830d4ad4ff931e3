"""Which container engine runs the jobs: Docker, or Podman's Docker-compatible socket.

Three things about an engine are found out once and remembered:
- the Engine API version to speak (negotiated, kept in `<home>/engine-api.json`),
- whether it answers at all (a plain `EngineUnavailableError` naming DOCKER_HOST),
- whether it can give a container GPUs, and how (`require_gpus`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
from docker.constants import DEFAULT_DOCKER_API_VERSION
from docker.errors import APIError, DockerException
from docker.utils import version_lt
from requests.exceptions import RequestException

from jobcloud.blocks.errors import ContainerEngineError, EngineUnavailableError, GpuUnavailableError
from jobcloud.blocks.settings import get_settings

# Where Podman serves the Docker API when no Docker engine runs (rootful, then rootless).
PODMAN_SOCKETS = (
    "/run/podman/podman.sock",
    f"{os.environ.get('XDG_RUNTIME_DIR', f'/run/user/{os.getuid()}')}/podman/podman.sock",
)

# Spoken when an engine's /version has no ApiVersion (nothing current does): Docker 20.10+ and
# Podman 4+ all serve it.
FALLBACK_API_VERSION = "1.41"
API_CACHE_NAME = "engine-api.json"
# Where Podman (and Docker with CDI enabled) read CDI specs by default.
CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
NVIDIA_CDI_KIND = "nvidia.com/gpu"
MAX_CDI_SPEC_BYTES = 16 * 1024 * 1024

# Docker's words when it refuses the client's API version (29.x: "client version 1.41 is too
# old. Minimum supported API version is 1.44 ..."; older engines: "client is newer than server").
_REFUSED_VERSION = re.compile(r"client version \S+ is too (old|new)|client is newer than server", re.I)

_lock = threading.Lock()
# In-process memory: one negotiation and one GPU probe per engine URL and process at most.
_versions: dict[str, str] = {}
_gpu_support: dict[str, GpuSupport] = {}


def engine_url() -> str | None:
    """`DOCKER_HOST` if set; else Docker's socket if present; else a Podman socket."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    if Path("/var/run/docker.sock").exists():
        return "unix:///var/run/docker.sock"
    for sock in PODMAN_SOCKETS:
        if Path(sock).exists():
            return f"unix://{sock}"
    return None


def engine_url_of(client: Any) -> str:
    """The URL a client from `docker_client` talks to (the SDK keeps only http+docker://localhost)."""
    return getattr(client, "jobcloud_url", None) or engine_url() or "(no engine)"


def engine_label(url: str) -> str:
    """The URL and where it came from, for messages: "unix:///x.sock (DOCKER_HOST)"."""
    return f"{url} (DOCKER_HOST)" if os.environ.get("DOCKER_HOST") == url else f"{url} (default socket; DOCKER_HOST unset)"


def short_reason(exc: BaseException) -> str:
    """The root cause of a connection failure in a few words ("No such file or directory").

    requests and urllib3 wrap the OS error two or three levels deep, inside tuples of args.
    """
    todo: list[Any] = [exc]
    seen: set[int] = set()
    leaf: BaseException | None = None  # the innermost exception that wraps nothing
    while todo:
        e = todo.pop(0)
        if id(e) in seen or e is None:
            continue
        seen.add(id(e))
        if isinstance(e, tuple):
            todo.extend(e)
            continue
        if not isinstance(e, BaseException):
            continue
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        inner = [a for a in e.args if isinstance(a, (BaseException, tuple))]
        if not inner and str(e) and leaf is None and e is not exc:
            leaf = e
        todo.extend(inner)
        todo.extend([getattr(e, "reason", None), e.__cause__, e.__context__])
    if isinstance(exc, APIError):
        text = f"{exc.status_code} {exc.explanation or exc}"
    elif leaf is not None:
        text = str(leaf)
    else:
        text = str(exc) or exc.__class__.__name__
    text = text.strip().splitlines()[0] if text.strip() else exc.__class__.__name__
    return text if len(text) <= 200 else text[:197] + "..."


def engine_unavailable(url: str, exc: BaseException) -> EngineUnavailableError:
    """The error for an engine that does not answer at ``url`` (``exc``: what the SDK raised)."""
    return EngineUnavailableError(
        f"no container engine answers at {engine_label(url)}: {short_reason(exc)}; "
        "start Docker or Podman (scripts/engine.sh) or fix DOCKER_HOST"
    )


def engine_lost(url: str, exc: BaseException) -> ContainerEngineError:
    """The error for an engine that went away while a container ran (a plain message, no repr)."""
    return ContainerEngineError(f"lost the container engine at {engine_label(url)} while the container ran: {short_reason(exc)}")


# --- API version -----------------------------------------------------------------------------


def sdk_api_version() -> str:
    """The newest Engine API version the installed Docker SDK speaks."""
    return DEFAULT_DOCKER_API_VERSION


def api_cache_path() -> Path:
    """The file that remembers each engine's negotiated API version."""
    return get_settings().home / API_CACHE_NAME


def _read_api_cache(path: Path) -> dict[str, Any]:
    # Anything unreadable counts as empty: the engine is simply asked again.
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remembered_api_version(url: str, path: Path | None = None) -> str | None:
    """The API version remembered for ``url`` in the cache file, if any and well-formed."""
    entry = _read_api_cache(path or api_cache_path()).get(url)
    version = entry.get("api_version") if isinstance(entry, dict) else None
    if isinstance(version, str) and re.fullmatch(r"\d+\.\d+", version):
        return version
    return None


def remember_api_version(url: str, version: str, server: dict[str, Any], path: Path | None = None) -> None:
    """Write ``version`` for ``url`` into the cache file (temp file + os.replace: a reader
    never sees half a file). A home that cannot be written only costs a negotiation later."""
    path = path or api_cache_path()
    data = _read_api_cache(path)
    data[url] = {
        "api_version": version,
        "server_api_version": server.get("ApiVersion"),
        "engine": ((server.get("Components") or [{}])[0] or {}).get("Name"),
        "engine_version": server.get("Version"),
        "negotiated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def negotiate_api_version(url: str, timeout: int = 60) -> tuple[str, dict[str, Any]]:
    """Ask the engine's unversioned /version; speak min(its ApiVersion, the SDK's newest).

    Returns the version and the engine's answer. Raises `EngineUnavailableError`.
    """
    try:
        # An explicit version: the constructor must not make its own /version round trip.
        api = docker.APIClient(base_url=url, version=sdk_api_version(), timeout=timeout)
        try:
            server = api.version(api_version=False)
        finally:
            api.close()
    except (DockerException, RequestException) as exc:
        raise engine_unavailable(url, exc) from None
    theirs = server.get("ApiVersion") or FALLBACK_API_VERSION
    ours = sdk_api_version()
    return (theirs if version_lt(theirs, ours) else ours), server


def _renegotiate(url: str, timeout: int) -> str:
    version, server = negotiate_api_version(url, timeout)
    _versions[url] = version
    remember_api_version(url, version, server)
    return version


def api_version_for(url: str, timeout: int = 60) -> str:
    """The API version to speak to ``url``: this process's, else the file's, else negotiated."""
    with _lock:
        if url in _versions:
            return _versions[url]
        version = remembered_api_version(url)
        if version:
            _versions[url] = version
            return version
        return _renegotiate(url, timeout)


def version_refused(exc: APIError) -> bool:
    """Whether the engine refused the client's API version (too old or too new)."""
    return exc.status_code == 400 and bool(_REFUSED_VERSION.search(f"{exc.explanation or ''} {exc}"))


def _connect(url: str, version: str, timeout: int) -> docker.DockerClient:
    client = docker.DockerClient(base_url=url, timeout=timeout, version=version)
    try:
        client.ping()
    except BaseException:
        client.close()
        raise
    return client


def docker_client(timeout: int = 120) -> docker.DockerClient:
    """A Docker SDK client for the engine `engine_url()` names, checked with a ping.

    The API version is negotiated on first contact with an engine and remembered (in this
    process and in `<home>/engine-api.json`), so later clients cost one ping, no /version.
    An engine that refuses the remembered version (after an upgrade) is asked again, once.
    `DOCKER_API_VERSION`, if set, wins and is never negotiated.
    Raises `EngineUnavailableError` (a `ContainerEngineError`) when nothing answers.
    """
    url = engine_url()
    if url is None:
        raise EngineUnavailableError(
            "no container engine found: set DOCKER_HOST, start Docker, or start Podman's API service (scripts/engine.sh does that)"
        )
    forced = os.environ.get("DOCKER_API_VERSION")
    try:
        version = forced or api_version_for(url, timeout)
        try:
            client = _connect(url, version, timeout)
        except APIError as exc:
            if forced or not version_refused(exc):
                raise
            with _lock:
                version = _renegotiate(url, timeout)
            client = _connect(url, version, timeout)
    except EngineUnavailableError:
        raise
    except (DockerException, RequestException) as exc:
        raise engine_unavailable(url, exc) from None
    client.jobcloud_url = url  # type: ignore[attr-defined]  # for messages and per-engine caches
    return client


# --- GPUs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSupport:
    """Whether and how an engine gives a container GPUs.

    ``method``: "runtime" (a Docker DeviceRequest served by the nvidia runtime), "cdi-request"
    (a DeviceRequest with driver "cdi", Docker 28+), "cdi-device" (a CDI device name, Podman),
    or None: no GPUs, and ``why_not`` says what is missing.
    """

    engine: str
    method: str | None
    why_not: str = ""
    cdi_ids: tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return self.method is not None

    @property
    def gpu_ids(self) -> tuple[str, ...]:
        """The CDI ids of whole GPUs this engine is known to offer, one per GPU: the index names
        (`nvidia.com/gpu=0`, `=1`, ... as `nvidia-ctk cdi generate` writes them) in order, else
        every name but `all` (a spec named by UUID). Empty: not known."""
        indexed = sorted((i for i in self.cdi_ids if i.partition("=")[2].isdigit()), key=lambda i: int(i.partition("=")[2]))
        if indexed:
            return tuple(indexed)
        return tuple(i for i in self.cdi_ids if not i.endswith("=all"))

    def create_kwargs(self, gpus: int) -> dict[str, Any]:
        """What `containers.create` needs to give ``gpus`` GPUs this way.

        Docker's nvidia runtime: `DeviceRequest(count=gpus, capabilities=[["gpu"]])`. CDI (a
        Podman device, a Docker CDI request): the first ``gpus`` GPUs by name when the engine's
        CDI specs name that many (`nvidia.com/gpu=0` ... `=gpus-1`), else `nvidia.com/gpu=all`
        (names not known here: a remote engine with `JOBCLOUD_ASSUME_GPU=1`). Whichever, the
        job's command first checks that it sees ``gpus`` GPUs (jobcloud.flows.container_spec).
        """
        from docker.types import DeviceRequest

        known = self.gpu_ids
        ids = list(known[:gpus]) if len(known) >= gpus else [f"{NVIDIA_CDI_KIND}=all"]
        if self.method == "cdi-device":
            # Podman's compat API ignores DeviceRequests; CDI device names in Devices work.
            return {"devices": ids}
        if self.method == "cdi-request":
            return {"device_requests": [DeviceRequest(driver="cdi", device_ids=ids)]}
        return {"device_requests": [DeviceRequest(count=gpus, capabilities=[["gpu"]])]}


def is_podman(version: dict[str, Any]) -> bool:
    """Whether an engine's /version answer is Podman's."""
    return any("podman" in str(c.get("Name", "")).lower() for c in version.get("Components") or [])


def local_cdi_gpu_spec(dirs: tuple[str, ...] = CDI_SPEC_DIRS) -> bool:
    """Whether a CDI spec for nvidia.com/gpu exists in ``dirs`` on this host."""
    for d in dirs:
        try:
            files = [p for p in Path(d).iterdir() if p.suffix in (".yaml", ".yml", ".json")]
        except OSError:
            continue
        for p in files:
            try:
                if NVIDIA_CDI_KIND in p.read_text(encoding="utf-8", errors="replace"):
                    return True
            except OSError:
                continue
    return False


def local_cdi_gpu_ids(dirs: tuple[str, ...] = CDI_SPEC_DIRS) -> tuple[str, ...]:
    """The nvidia.com/gpu device ids the CDI specs in ``dirs`` name (`nvidia.com/gpu=0`, ...,
    `nvidia.com/gpu=all`); unreadable or foreign specs are skipped."""
    import yaml  # YAML and JSON specs alike

    ids: list[str] = []
    for d in dirs:
        try:
            files = sorted(p for p in Path(d).iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        except OSError:
            continue
        for p in files:
            try:
                if p.stat().st_size > MAX_CDI_SPEC_BYTES:
                    continue
                spec = yaml.safe_load(p.read_text(encoding="utf-8", errors="replace"))
            except (OSError, yaml.YAMLError):
                continue
            if not isinstance(spec, dict) or spec.get("kind") != NVIDIA_CDI_KIND:
                continue
            for dev in spec.get("devices") or []:
                name = dev.get("name") if isinstance(dev, dict) else None
                if name is not None and f"{NVIDIA_CDI_KIND}={name}" not in ids:
                    ids.append(f"{NVIDIA_CDI_KIND}={name}")
    return tuple(ids)


def _cdi_gpu_ids(info: dict[str, Any]) -> tuple[str, ...]:
    ids = []
    for dev in info.get("DiscoveredDevices") or []:
        if not isinstance(dev, dict):
            continue
        dev_id = str(dev.get("ID", ""))
        if dev.get("Kind") == NVIDIA_CDI_KIND or dev_id.startswith(NVIDIA_CDI_KIND + "="):
            ids.append(dev_id or f"{NVIDIA_CDI_KIND}=all")
    return tuple(ids)


def decide_gpu_support(
    info: dict[str, Any], version: dict[str, Any], local: bool, cdi_spec: bool, local_ids: tuple[str, ...] = ()
) -> GpuSupport:
    """How an engine with these /info and /version answers gives GPUs (pure; for tests too).

    ``local``: the engine runs on this host (unix socket), so ``cdi_spec`` (a CDI spec for
    nvidia.com/gpu in /etc/cdi or /var/run/cdi here) and ``local_ids`` (the device ids it names,
    `local_cdi_gpu_ids`) say something about it.
    """
    cdi_ids = _cdi_gpu_ids(info)
    if is_podman(version):
        if cdi_ids or (local and (cdi_spec or local_ids)):
            # Podman 4's /info lists no CDI devices: the host's specs name them.
            return GpuSupport("Podman", "cdi-device", cdi_ids=cdi_ids or (local_ids if local else ()))
        where = "in /etc/cdi or /var/run/cdi" if local else "visible (a remote engine: cannot be checked)"
        return GpuSupport("Podman", None, f"Podman's Docker API ignores GPU requests and no nvidia.com/gpu CDI spec is {where}")
    if "nvidia" in (info.get("Runtimes") or {}):
        return GpuSupport("Docker", "runtime")
    if cdi_ids:
        return GpuSupport("Docker", "cdi-request", cdi_ids=cdi_ids)
    return GpuSupport("Docker", None, "Docker: no 'nvidia' runtime / CDI device")


def gpu_support(client: docker.DockerClient) -> GpuSupport:
    """Probe (once per engine and process) whether ``client``'s engine can give GPUs."""
    url = engine_url_of(client)
    if url not in _gpu_support:
        try:
            info, version = client.info(), client.version()
        except (DockerException, RequestException) as exc:
            raise engine_unavailable(url, exc) from None
        local = url.startswith("unix://")
        _gpu_support[url] = decide_gpu_support(info, version, local, local_cdi_gpu_spec(), local_cdi_gpu_ids() if local else ())
    return _gpu_support[url]


def require_gpus(client: docker.DockerClient, gpus: int) -> GpuSupport:
    """How to give a container ``gpus`` GPUs on ``client``'s engine, or `GpuUnavailableError`.

    Call it before creating the container: a GPU request the engine cannot honour must fail
    at once, not run on the CPU (Podman's Docker API accepts a DeviceRequest and ignores it).
    `JOBCLOUD_ASSUME_GPU=1` skips the refusal, for engines whose GPU support cannot be probed
    (a remote Podman with CDI specs, an engine behind a proxy that hides /info): the request
    is then sent in the form the engine's kind takes (a CDI device on Podman, a DeviceRequest
    elsewhere).
    """
    assume = get_settings().assume_gpu
    try:
        support = gpu_support(client)
    except EngineUnavailableError:
        if assume:
            return GpuSupport("unknown", "runtime")
        raise
    if support.available:
        known = support.gpu_ids  # CDI only; the nvidia runtime does not say how many
        if known and len(known) < gpus and not assume:
            raise GpuUnavailableError(
                gpus,
                engine_url_of(client),
                f"the job asks for {gpus} GPU(s) but the container engine at {engine_label(engine_url_of(client))} "
                f"offers only {len(known)}; pass --gpu {len(known)} or run it on a bigger GPU host",
            )
        return support
    if assume:
        return GpuSupport(support.engine, "cdi-device" if support.engine == "Podman" else "runtime")
    url = engine_url_of(client)
    raise GpuUnavailableError(
        gpus,
        url,
        f"the job asks for {gpus} GPU(s) but the container engine at {engine_label(url)} offers none "
        f"({support.why_not}); run it on a GPU host or pass --gpu 0 "
        "(JOBCLOUD_ASSUME_GPU=1 skips this check)",
    )

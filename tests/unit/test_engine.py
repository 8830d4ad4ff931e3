"""blocks/engine.py: API version negotiation and its cache file, plain errors for an engine
that does not answer, and the GPU decision. A tiny fake engine (an HTTP server on a unix
socket that answers /_ping, /version and /info and counts requests) stands in for Docker."""

from __future__ import annotations

import json
import re
import shutil
import socketserver
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from requests.exceptions import ConnectionError as RequestsConnectionError

from jobcloud.blocks import engine
from jobcloud.blocks.errors import ContainerEngineError, EngineUnavailableError, GpuUnavailableError, UserError

SDK = engine.sdk_api_version()


def _lt(a: str, b: str) -> bool:
    return tuple(map(int, a.split("."))) < tuple(map(int, b.split(".")))


class FakeEngine:
    """Answers like Docker: refuses API versions outside [min_api, api] the way 29.x does."""

    def __init__(self, sock: str, api: str = "1.47", min_api: str = "1.24", ping_status: int = 200) -> None:
        self.sock, self.api, self.min_api, self.ping_status = sock, api, min_api, ping_status
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet, and unix sockets have no address
                pass

            def _send(self, status: int, body: Any) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                fake.requests.append(self.path)
                path = self.path.split("?")[0]
                versioned = re.match(r"^/v(\d+\.\d+)(/.*)$", path)
                if versioned:
                    version, path = versioned.groups()
                    if _lt(version, fake.min_api):
                        return self._send(
                            400,
                            {
                                "message": f"client version {version} is too old. Minimum supported API version is {fake.min_api}, please upgrade your client to a newer version"
                            },
                        )
                    if _lt(fake.api, version):
                        return self._send(
                            400, {"message": f"client version {version} is too new. Maximum supported API version is {fake.api}"}
                        )
                if path == "/_ping":
                    return self._send(fake.ping_status, "OK" if fake.ping_status == 200 else "boom")
                if path == "/version":
                    return self._send(
                        200,
                        {
                            "ApiVersion": fake.api,
                            "MinAPIVersion": fake.min_api,
                            "Version": "29.0.0",
                            "Components": [{"Name": "Engine", "Version": "29.0.0"}],
                        },
                    )
                if path == "/info":
                    return self._send(200, {"Runtimes": {"runc": {"path": "runc"}}})
                self._send(404, {"message": "page not found"})

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(sock, Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def count(self, what: str) -> int:
        return sum(1 for p in self.requests if p.split("?")[0].endswith(what))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fresh JobCloud home and empty in-process caches for each test."""
    monkeypatch.setenv("JOBCLOUD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DOCKER_API_VERSION", raising=False)
    monkeypatch.delenv("JOBCLOUD_ASSUME_GPU", raising=False)
    engine._versions.clear()
    engine._gpu_support.clear()
    yield
    engine._versions.clear()
    engine._gpu_support.clear()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths must stay under 108 bytes: pytest's tmp_path can be longer.
    d = Path(tempfile.mkdtemp(prefix="jc-eng-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fake(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    server = FakeEngine(str(short_dir / "d.sock"))
    monkeypatch.setenv("DOCKER_HOST", server.url)
    yield server
    server.close()


def _cache() -> dict[str, Any]:
    return json.loads(engine.api_cache_path().read_text())


def test_negotiation_takes_the_older_of_server_and_sdk(fake: FakeEngine) -> None:
    fake.api = "9.99"  # a future engine: the SDK's newest wins
    assert engine.docker_client().api._version == SDK
    engine._versions.clear()
    engine.api_cache_path().unlink()
    fake.api = "1.41"  # Podman 4.3: the engine's wins
    assert engine.docker_client().api._version == "1.41"
    entry = _cache()[fake.url]
    assert entry["api_version"] == "1.41" and entry["server_api_version"] == "1.41" and entry["engine"] == "Engine"


def test_remembered_version_needs_no_version_call(fake: FakeEngine) -> None:
    engine.docker_client()
    assert fake.count("/version") == 1 and _cache()[fake.url]["api_version"] == SDK
    engine._versions.clear()  # a new process: only the file remembers
    client = engine.docker_client()
    assert client.api._version == SDK
    assert fake.count("/version") == 1 and fake.count("/_ping") == 2
    # Within a process not even the file is read again.
    engine.api_cache_path().unlink()
    engine.docker_client()
    assert fake.count("/version") == 1 and not engine.api_cache_path().exists()


def test_cache_file_is_written_whole_and_keeps_other_engines(fake: FakeEngine) -> None:
    path = engine.api_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"unix:///other.sock": {"api_version": "1.43"}}))
    engine.docker_client()
    data = _cache()
    assert data["unix:///other.sock"]["api_version"] == "1.43" and data[fake.url]["api_version"] == SDK
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_engine_upgrade_refusing_the_remembered_version_renegotiates_once(fake: FakeEngine) -> None:
    engine.remember_api_version(fake.url, "1.41", {"ApiVersion": "1.41"})
    fake.min_api, fake.api = "1.44", "1.52"  # Docker 29.0
    client = engine.docker_client()
    assert client.api._version == SDK
    assert fake.count("/version") == 1
    assert [p for p in fake.requests if p.endswith("/_ping")] == ["/v1.41/_ping", f"/v{SDK}/_ping"]
    assert _cache()[fake.url]["api_version"] == SDK


def test_engine_downgrade_refusing_a_too_new_version_renegotiates(fake: FakeEngine) -> None:
    engine.remember_api_version(fake.url, SDK, {"ApiVersion": SDK})
    fake.api = "1.41"
    assert engine.docker_client().api._version == "1.41"
    assert _cache()[fake.url]["api_version"] == "1.41"


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"%s": {"api_version": "latest"}}', ""])
def test_unreadable_cache_means_ask_again(fake: FakeEngine, content: str) -> None:
    path = engine.api_cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(content.replace("%s", fake.url))
    assert engine.docker_client().api._version == SDK
    assert fake.count("/version") == 1
    assert _cache()[fake.url]["api_version"] == SDK


def test_unwritable_home_still_works(fake: FakeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("JOBCLOUD_HOME", str(blocker / "home"))  # below a file: mkdir fails
    assert engine.docker_client().api._version == SDK


def test_docker_api_version_wins(fake: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_API_VERSION", "1.43")
    assert engine.docker_client().api._version == "1.43"
    assert fake.count("/version") == 0 and not engine.api_cache_path().exists()


def test_docker_api_version_refused_is_not_renegotiated(fake: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_API_VERSION", "1.41")
    fake.min_api = "1.44"
    with pytest.raises(EngineUnavailableError, match="too old"):
        engine.docker_client()
    assert fake.count("/version") == 0


def test_an_engine_that_errors_is_unavailable(fake: FakeEngine) -> None:
    fake.ping_status = 500
    with pytest.raises(EngineUnavailableError, match=r"no container engine answers at .*\(DOCKER_HOST\): 500"):
        engine.docker_client()


def test_nothing_listening_is_a_plain_user_error(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"unix://{short_dir}/nowhere.sock"
    monkeypatch.setenv("DOCKER_HOST", url)
    with pytest.raises(EngineUnavailableError) as info:
        engine.docker_client()
    msg = str(info.value)
    assert msg.startswith(f"no container engine answers at {url} (DOCKER_HOST): No such file or directory;")
    assert "scripts/engine.sh" in msg and "fix DOCKER_HOST" in msg
    assert isinstance(info.value, UserError) and isinstance(info.value, ContainerEngineError)
    assert not engine.api_cache_path().exists()


def test_refused_connection_says_so(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    path = short_dir / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens: what a crashed engine leaves
    monkeypatch.setenv("DOCKER_HOST", f"unix://{path}")
    with pytest.raises(EngineUnavailableError, match="Connection refused"):
        engine.docker_client()


def test_short_reason_digs_out_the_os_error() -> None:
    from urllib3.exceptions import ProtocolError

    exc = RequestsConnectionError(ProtocolError("Connection aborted.", FileNotFoundError(2, "No such file or directory")))
    assert engine.short_reason(exc) == "No such file or directory"
    assert engine.short_reason(RuntimeError("x" * 500)).endswith("...")


# --- GPUs ------------------------------------------------------------------------------------

DOCKER_VERSION = {"Components": [{"Name": "Engine", "Version": "29.0.0"}], "ApiVersion": "1.52"}
PODMAN_VERSION = {"Components": [{"Name": "Podman Engine", "Version": "4.3.1"}, {"Name": "Conmon"}], "ApiVersion": "1.41"}
PLAIN_INFO = {"Runtimes": {"runc": {"path": "runc"}, "io.containerd.runc.v2": {"path": "runc"}}}


def test_docker_with_the_nvidia_runtime_gets_a_device_request() -> None:
    info = {"Runtimes": {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}}
    s = engine.decide_gpu_support(info, DOCKER_VERSION, local=True, cdi_spec=False)
    assert s.available and s.method == "runtime"
    (dr,) = s.create_kwargs(2)["device_requests"]
    assert dr["Count"] == 2 and dr["Capabilities"] == [["gpu"]]


def test_docker_with_cdi_devices_gets_a_cdi_request() -> None:
    info = {
        **PLAIN_INFO,
        "DiscoveredDevices": [
            {"Source": "cdi", "ID": "nvidia.com/gpu=0"},
            {"Source": "cdi", "ID": "nvidia.com/gpu=1"},
            {"Source": "cdi", "ID": "nvidia.com/gpu=all"},
            {"Source": "cdi", "ID": "vendor.com/fpga=0"},
        ],
    }
    s = engine.decide_gpu_support(info, DOCKER_VERSION, local=False, cdi_spec=False)
    assert s.method == "cdi-request"
    (dr,) = s.create_kwargs(1)["device_requests"]
    assert dr["Driver"] == "cdi" and dr["DeviceIDs"] == ["nvidia.com/gpu=0"]
    # The brief's shape (a Kind field) counts too.
    s = engine.decide_gpu_support(
        {"DiscoveredDevices": [{"Kind": "nvidia.com/gpu", "ID": "nvidia.com/gpu=all"}]}, DOCKER_VERSION, False, False
    )
    assert s.create_kwargs(1)["device_requests"][0]["DeviceIDs"] == ["nvidia.com/gpu=all"]


def test_docker_without_gpus_offers_none() -> None:
    s = engine.decide_gpu_support(PLAIN_INFO, DOCKER_VERSION, local=True, cdi_spec=True)
    assert not s.available and "no 'nvidia' runtime" in s.why_not


def test_podman_needs_a_local_cdi_spec() -> None:
    s = engine.decide_gpu_support(PLAIN_INFO, PODMAN_VERSION, local=True, cdi_spec=False)
    assert not s.available and s.engine == "Podman" and "ignores GPU requests" in s.why_not
    # Even an nvidia runtime in containers.conf does not help through the compat API.
    nv = {"Runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}
    assert not engine.decide_gpu_support(nv, PODMAN_VERSION, local=True, cdi_spec=False).available
    s = engine.decide_gpu_support(PLAIN_INFO, PODMAN_VERSION, local=True, cdi_spec=True)
    assert s.method == "cdi-device" and s.create_kwargs(2) == {"devices": ["nvidia.com/gpu=all"]}
    s = engine.decide_gpu_support(PLAIN_INFO, PODMAN_VERSION, local=False, cdi_spec=True)
    assert not s.available and "remote" in s.why_not


def test_local_cdi_spec_is_found_by_kind(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "other.yaml").write_text("cdiVersion: 0.5.0\nkind: vendor.com/fpga\n")
    assert not engine.local_cdi_gpu_spec((str(a), str(b)))
    (a / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: [{name: all}]\n")
    assert engine.local_cdi_gpu_spec((str(a), str(b)))


class _Client:
    """Answers /info and /version like the engine it plays; counts probes."""

    def __init__(self, info: dict, version: dict, url: str = "unix:///fake.sock") -> None:
        self._info, self._version, self.jobcloud_url, self.probes = info, version, url, 0
        self.created: list[dict] = []

    def info(self) -> dict:
        self.probes += 1
        return self._info

    def version(self) -> dict:
        return self._version


def test_require_gpus_refuses_with_a_plain_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "local_cdi_gpu_spec", lambda *a: False)
    client = _Client(PLAIN_INFO, PODMAN_VERSION)
    with pytest.raises(GpuUnavailableError) as info:
        engine.require_gpus(client, 2)
    msg = str(info.value)
    assert msg.startswith("the job asks for 2 GPU(s) but the container engine at unix:///fake.sock")
    assert "offers none" in msg and "Podman's Docker API ignores GPU requests" in msg and "--gpu 0" in msg
    assert isinstance(info.value, UserError) and info.value.gpus == 2
    with pytest.raises(GpuUnavailableError):
        engine.require_gpus(client, 1)
    assert client.probes == 1  # probed once per engine and process


def test_assume_gpu_skips_the_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "local_cdi_gpu_spec", lambda *a: False)
    monkeypatch.setenv("JOBCLOUD_ASSUME_GPU", "1")
    assert engine.require_gpus(_Client(PLAIN_INFO, PODMAN_VERSION), 1).create_kwargs(1) == {"devices": ["nvidia.com/gpu=all"]}
    s = engine.require_gpus(_Client(PLAIN_INFO, DOCKER_VERSION, url="unix:///docker.sock"), 1)
    assert s.create_kwargs(1)["device_requests"][0]["Count"] == 1


def test_cdi_request_for_more_gpus_than_there_are_is_refused() -> None:
    info = {"DiscoveredDevices": [{"Source": "cdi", "ID": "nvidia.com/gpu=0"}]}
    with pytest.raises(GpuUnavailableError, match="offers only 1"):
        engine.require_gpus(_Client(info, DOCKER_VERSION), 2)


# --- run_container: refused before create; a lost engine is one plain sentence ---------------


def _spec(gpus: int = 0):
    from jobcloud.flows.container_spec import ContainerSpec

    return ContainerSpec(image="img", command=["true"], host_files="/tmp/x", gpus=gpus, timeout=30)


def test_run_container_refuses_gpus_before_creating_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobcloud.flows.container_run import run_container

    monkeypatch.setattr(engine, "local_cdi_gpu_spec", lambda *a: False)
    client = _Client(PLAIN_INFO, PODMAN_VERSION)
    client.images = client.containers = None  # any use of them would raise AttributeError
    with pytest.raises(GpuUnavailableError):
        run_container(client, _spec(gpus=1), on_line=lambda line: None)


def test_losing_the_engine_mid_run_is_a_plain_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from urllib3.exceptions import ProtocolError

    from jobcloud.flows import container_run

    removed: list[bool] = []

    class Container:
        id = "c0ffee"
        attrs: dict = {}

        def start(self) -> None:
            pass

        def logs(self, **kw):
            return iter([b"hello\n"])

        def reload(self) -> None:
            raise RequestsConnectionError(ProtocolError("Connection aborted.", ConnectionRefusedError(111, "Connection refused")))

        def remove(self, force: bool) -> None:
            removed.append(force)
            raise RequestsConnectionError("still gone")

    client = _Client(PLAIN_INFO, DOCKER_VERSION, url="unix:///gone.sock")
    client.containers = type("C", (), {"create": lambda self, **kw: Container()})()
    monkeypatch.setattr(container_run, "ensure_image", lambda c, i: None)
    with pytest.raises(ContainerEngineError) as info:
        container_run.run_container(client, _spec(), on_line=lambda line: None)
    assert str(info.value).startswith("lost the container engine at unix:///gone.sock")
    assert "while the container ran: Connection refused" in str(info.value)
    assert removed == [True]  # the finally still tried

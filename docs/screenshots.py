"""Screenshots of the Prefect UI for the docs (run by docs/screenshots.sh).

Starts its own Prefect server (SQLite, a free port) with its own JOBCLOUD_HOME and job store
in a temporary folder, deploys the catalog to it, runs a torchfit train job and a linefit
train job that fails in its container, then drives headless Chromium over its DevTools port
(a tiny WebSocket client from the standard library: no new dependency) and writes
docs/screenshots/{runs,run,run-artifacts,deployments,run-form,artifact-outputs,
artifact-loss-curve}.png. Everything it started is
stopped on exit (also on Ctrl-C or SIGTERM).

    .venv/bin/python docs/screenshots.py [--out DIR] [--keep]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WIDTH, HEIGHT = 1600, 1000
RENDER_TIMEOUT_S = 20


def log(msg: str) -> None:
    print(f"[screenshots {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes (self-contained: the same recipe as PrefectServer in deployments/server/processes.py)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A process started in its own session; stop() ends its whole process group."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log = log_path
        with open(log_path, "ab") as fh:
            self.popen = subprocess.Popen(
                args,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``timeout`` s."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
            if self.popen.poll() is not None:
                break
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        try:  # children that outlived the leader (same group)
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class PrefectServer:
    """`prefect server start` on SQLite in its own PREFECT_HOME, on a free port."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.proc: Proc | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_UI_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        return env

    def start(self, timeout: float = 120) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = Proc(args, self.env(), self.home / "server.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise SystemExit(f"prefect server exited early:\n{self.proc.tail()}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"prefect server did not answer in {timeout} s:\n{self.proc.tail()}")


# --- a minimal WebSocket client (RFC 6455, client side, text frames) --------------------------


class WebSocket:
    def __init__(self, url: str, timeout: float = 30) -> None:
        assert url.startswith("ws://"), url
        hostport, _, path = url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port or 80)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        head, _, self.buf = head.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + _mask(payload, mask))

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = _mask(payload, mask)
            if opcode == 0x8:
                raise ConnectionError("websocket closed by peer")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            message += payload
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


def _mask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


class DevTools:
    """Chrome DevTools protocol on one page target."""

    def __init__(self, ws_url: str) -> None:
        self.ws = WebSocket(ws_url)
        self.next_id = 0

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            return None
        return result.get("result", {}).get("value")


# --- helpers ------------------------------------------------------------------------------------


def http_json(url: str, data: object | None = None, method: str | None = None, timeout: float = 10) -> object:
    req = urllib.request.Request(
        url,
        data=None if data is None else json.dumps(data).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def jobcloud(env: dict[str, str], *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """`jobcloud ARGS` (as `python -m jobcloud.deployments.cli`) with stdout captured, stderr passed on.

    It runs in its own session, so a Ctrl-C in the terminal reaches only this script, which
    then sends it one SIGINT (a job stops and removes its container) and gives it up to 30 s to
    end before it is killed."""
    t0 = time.monotonic()
    cmd = [sys.executable, "-m", "jobcloud.deployments.cli", *args]
    with subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True) as child:
        try:
            stdout, _ = child.communicate(timeout=timeout)
        except BaseException:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
            raise
    proc = subprocess.CompletedProcess(cmd, child.returncode, stdout)
    log(f"jobcloud {' '.join(args[:2])}: exit {proc.returncode} in {time.monotonic() - t0:.1f} s")
    if check and proc.returncode != 0:
        raise SystemExit(f"jobcloud {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}")
    return proc


def remove_containers(api_url: str) -> None:
    """Remove containers of this server's jobs that are left (normally none: a job removes its
    own; this covers a job killed mid-way)."""
    try:
        import docker

        client = docker.DockerClient(base_url=os.environ.get("DOCKER_HOST") or None, version="auto", timeout=10)
        for c in client.containers.list(all=True, sparse=True, filters={"label": f"io.jobcloud.api={api_url}"}):
            c.remove(force=True)
            log(f"removed leftover container {c.short_id}")
    except Exception as exc:  # noqa: BLE001  the engine may be away; never fail the clean-up on this
        log(f"note: could not check for leftover containers: {exc}")


def find_deployment(api_url: str, flow: str, name: str) -> str | None:
    """The id of deployment FLOW/NAME, else of the first deployment of FLOW, else None."""
    try:
        return http_json(f"{api_url}/deployments/name/{flow}/{name}")["id"]
    except (OSError, ValueError, KeyError):
        pass
    try:
        found = http_json(f"{api_url}/deployments/filter", {"flows": {"name": {"any_": [flow]}}}, method="POST")
        return found[0]["id"] if found else None
    except (OSError, ValueError, KeyError, IndexError):
        return None


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("chromium not found (apt-get install -y chromium)")


def start_chromium(tmp: Path) -> tuple[Proc, int]:
    port = free_port()
    args = [
        find_chromium(),
        "--headless=new",
        f"--remote-debugging-port={port}",
        "--remote-debugging-address=127.0.0.1",
        f"--window-size={WIDTH},{HEIGHT}",
        "--no-sandbox",
        f"--user-data-dir={tmp / 'chromium'}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--hide-scrollbars",
        "--mute-audio",
        "about:blank",
    ]
    return Proc(args, dict(os.environ), tmp / "chromium.log"), port


def page_target(port: int, proc: Proc, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise SystemExit(f"chromium exited early:\n{proc.tail()}")
        try:
            targets = http_json(f"http://127.0.0.1:{port}/json/list")
            pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            new = http_json(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
            return new["webSocketDebuggerUrl"]
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    raise SystemExit(f"chromium's DevTools port {port} did not answer in {timeout} s:\n{proc.tail()}")


# Readiness: a JS expression per page, true when the page shows what its screenshot is for.
# Each also needs no visible loading indicator and a body text that stopped changing.
LOADING_JS = """(() => {
  const busy = document.querySelectorAll('.p-loading-icon, [aria-busy="true"], .p-loading, .loading-indicator');
  for (const el of busy) { if (el.offsetParent !== null) return true; }
  return false;
})()"""

IMAGES_LOADED_JS = """Array.from(document.images).every(i => i.complete)"""


def ready_js(must_contain: list[str], extra: str = "true") -> str:
    texts = json.dumps(must_contain)
    return f"""(() => {{
  const t = document.body ? document.body.innerText : '';
  return {texts}.every(s => t.includes(s)) && ({extra});
}})()"""


def click_js(label: str, element_id: str) -> str:
    """JS that clicks the tab (or button, link) ``label``; true once clicked."""
    return f"""(() => {{
  const want = {json.dumps(label)};
  const el = document.getElementById({json.dumps(element_id)})
    || Array.from(document.querySelectorAll('[role=tab], .p-tab, button, a')).find(e => e.innerText.trim() === want);
  if (!el) return false;
  el.click();
  return true;
}})()"""


FULL_HEIGHT_JS = """(() => {
  let h = document.documentElement.scrollHeight;
  for (const e of document.querySelectorAll('*')) {
    const o = getComputedStyle(e).overflowY;
    if ((o === 'auto' || o === 'scroll') && e.scrollHeight > e.clientHeight + 5)
      h = Math.max(h, innerHeight + e.scrollHeight - e.clientHeight);
  }
  return h;
})()"""
MAX_HEIGHT = 3000


@dataclass
class Shot:
    name: str  # the PNG's file name
    url: str
    what: str  # what the page must show, for the warning
    ready: str  # JS: true when the page shows it
    action: str | None = None  # JS run until it returns true, before `ready` (click a tab)
    full_page: bool = False  # grow the viewport to the content's height (up to MAX_HEIGHT)


def shoot(dt: DevTools, shot: Shot, out: Path, settle_s: float = 1.0) -> bool:
    """Navigate, run the shot's action, wait until it is ready, nothing loads and the text has
    been stable for ``settle_s``, capture. False if it was not ready in RENDER_TIMEOUT_S."""
    # Through about:blank, so that no check below can see the previous page (Page.navigate
    # returns before the new document replaces the old one).
    dt.call("Page.navigate", url="about:blank")
    for _ in range(40):
        if dt.evaluate("location.href") == "about:blank":
            break
        time.sleep(0.05)
    dt.call("Page.navigate", url=shot.url)
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    ok = False
    action = shot.action
    last_text, stable_since = None, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        if dt.evaluate("location.href") == "about:blank":
            continue
        if action and dt.evaluate(action) is True:
            action = None
            stable_since = time.monotonic()
            continue
        text = dt.evaluate("document.body ? document.body.innerText : ''")
        if text != last_text:
            last_text, stable_since = text, time.monotonic()
            continue
        if (
            time.monotonic() - stable_since >= settle_s
            and dt.evaluate(shot.ready) is True
            and dt.evaluate(LOADING_JS) is False
            and dt.evaluate(IMAGES_LOADED_JS) is True
        ):
            ok = True
            break
    if not ok:
        log(f"WARNING {shot.name}: the page did not show {shot.what} within {RENDER_TIMEOUT_S} s; captured anyway")
    height = HEIGHT
    if shot.full_page:
        height = min(MAX_HEIGHT, max(HEIGHT, int(dt.evaluate(FULL_HEIGHT_JS) or HEIGHT)))
        if height > HEIGHT:
            dt.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=height, deviceScaleFactor=1, mobile=False)
            time.sleep(0.5)
    time.sleep(0.3)  # one more paint (transitions, fonts)
    data = dt.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
    if height > HEIGHT:
        dt.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
    path = out / shot.name
    path.write_bytes(base64.b64decode(data))
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    log(f"wrote {shown} ({WIDTH}x{height})" + ("" if ok else " (NOT READY)"))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--tmp", type=Path, help="work folder (default: a new temporary one, removed at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (server log, store)")
    args = parser.parse_args()

    # SIGTERM/SIGHUP unwind like Ctrl-C, so that `finally` stops what was started.
    interrupted = False

    def interrupt(signum: int, frame: object) -> None:
        # Once: docs/screenshots.sh sends SIGTERM after the terminal's SIGINT.
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise KeyboardInterrupt

    # SIGINT too: started in the background by docs/screenshots.sh, this process (and so the
    # jobcloud commands) would otherwise ignore it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)

    t_start = time.monotonic()
    own_tmp = args.tmp is None
    tmp = Path(tempfile.mkdtemp(prefix="jobcloud-screenshots-")) if own_tmp else args.tmp
    tmp.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started: list[Proc] = []
    server = PrefectServer(home=tmp / "prefect")
    failures: list[str] = []
    written: list[Path] = []
    try:
        # 1. Chromium first: it starts while the server does.
        chromium, cdp_port = start_chromium(tmp)
        started.append(chromium)
        log(f"starting a Prefect server at http://127.0.0.1:{server.port} (work folder {tmp}) ...")
        server.start(timeout=120)
        ui = server.api_url[: -len("/api")]
        env = server.env()
        env.update(
            JOBCLOUD_HOME=str(tmp / "home"),
            JOBCLOUD_STORAGE=str(tmp / "home" / "store"),
            JOBCLOUD_CONFIG=str(ROOT / "application_config.yaml"),
            PYTHONUNBUFFERED="1",
        )
        env.pop("JOBCLOUD_WORKDIR", None)
        env.pop("JOBCLOUD_PIPELINES", None)
        log(f"server up after {time.monotonic() - t_start:.1f} s")

        # 2. Deploy, the sample into the store, the jobs.
        jobcloud(env, "deploy")
        sample = ROOT / "images" / "torchfit" / "sample"
        jobcloud(env, "files", "put", str(sample / "data"), str(sample / "config.yaml"), "samples/torchfit")
        train = jobcloud(
            env,
            "run",
            "torchfit/v1/train",
            "--config",
            "samples/torchfit/config.yaml",
            "--data",
            "samples/torchfit/data",
            "--local",
            "--json",
            check=False,
        )
        try:
            train_info = json.loads(train.stdout)
            train_id = train_info["id"]
        except (ValueError, KeyError):
            raise SystemExit(f"torchfit train printed no job id (exit {train.returncode}):\n{train.stdout}") from None
        if train.returncode != 0:
            failures.append(f"the torchfit train job did not complete: {train.stdout.strip()[:500]}")
        log(f"torchfit train job {train_id}: {train_info.get('state', train_info.get('status', '?'))}")

        # A job that fails in its container: linefit's train.sh exits 5 on fewer than two rows.
        one_row = tmp / "one-row.csv"
        one_row.write_text("1,2\n")
        jobcloud(env, "files", "put", str(ROOT / "examples" / "linefit" / "config.yaml"), "samples/linefit")
        jobcloud(env, "files", "put", str(one_row), "samples/linefit-one-row")
        bad = jobcloud(
            env,
            "run",
            "linefit/v1/train",
            "--config",
            "samples/linefit/config.yaml",
            "--data",
            "samples/linefit-one-row",
            "--local",
            "--json",
            check=False,
        )
        if bad.returncode != 1:
            log(f"note: the failing linefit job exited {bad.returncode} (1 expected): {bad.stdout.strip()[:300]}")

        deployment_id = find_deployment(server.api_url, "torchfit-train", "torchfit-v1-train")
        if not deployment_id:
            failures.append("no deployment of flow torchfit-train: run-form.png not taken")
        log(f"jobs done after {time.monotonic() - t_start:.1f} s; taking screenshots")

        # 3. Screenshots.
        dt = DevTools(page_target(cdp_port, chromium))
        dt.call("Page.enable")
        dt.call("Runtime.enable")
        dt.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
        artifacts = http_json(f"{server.api_url}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [train_id]}}}, method="POST")
        table = next((a for a in artifacts if a.get("type") == "table"), None)
        picture = next((a for a in artifacts if a.get("type") == "markdown" and "loss" in (a.get("key") or "")), None)
        # The cards show the key, or the description when there is no key.
        marks = [(a.get("key") or a.get("description") or "")[:40] for a in artifacts]
        if not (table and picture):
            failures.append(
                f"the train run has no outputs table or no loss-curve artifact: {[a.get('key') or a.get('type') for a in artifacts]}"
            )

        # The run page resets ?tab= to Logs while it loads, so the Artifacts tab is clicked.
        shots = [
            Shot("runs.png", f"{ui}/runs", "the flow runs list", ready_js(["torchfit-train", "linefit-train"])),
            Shot("run.png", f"{ui}/runs/flow-run/{train_id}", "the torchfit train run", ready_js(["torchfit-train", "Completed"])),
            Shot(
                "run-artifacts.png",
                f"{ui}/runs/flow-run/{train_id}?tab=Artifacts",
                "the run's Artifacts tab with its artifacts",
                ready_js(["torchfit-train", *marks], "location.search.includes('tab=Artifacts')"),
                action=click_js("Artifacts", "artifacts"),
                full_page=True,
            ),
            Shot("deployments.png", f"{ui}/deployments", "the deployments list", ready_js(["torchfit-train", "linefit-train"])),
        ]
        if deployment_id:
            shots.append(
                Shot(
                    "run-form.png",
                    f"{ui}/deployments/deployment/{deployment_id}/run",
                    "the custom run form",
                    ready_js(["torchfit-train"], "document.querySelectorAll('input, textarea, select').length > 1"),
                    full_page=True,
                )
            )
        # The artifacts themselves: the outputs table and the loss curve, each on its own page.
        if table:
            shots.append(
                Shot(
                    "artifact-outputs.png",
                    f"{ui}/artifacts/artifact/{table['id']}",
                    "the outputs table",
                    ready_js(["loss_curve.png", "model.pt"]),
                    full_page=True,
                )
            )
        if picture:
            shots.append(
                Shot(
                    "artifact-loss-curve.png",
                    f"{ui}/artifacts/artifact/{picture['id']}",
                    "the loss curve",
                    ready_js(["loss_curve.png"], "Array.from(document.images).some(i => i.naturalWidth > 200)"),
                )
            )
        for shot in shots:
            try:
                if not shoot(dt, shot, out):
                    failures.append(f"{shot.name}: did not show {shot.what} within {RENDER_TIMEOUT_S} s")
                written.append(out / shot.name)
            except (OSError, RuntimeError, ValueError) as exc:
                failures.append(f"{shot.name}: not written: {exc}")
                log(f"WARNING {shot.name}: {exc}")
        dt.ws.close()
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if server.proc:
            remove_containers(server.api_url)
            server.proc.stop(timeout=15)
        for proc in started:
            proc.stop(timeout=10)
        if own_tmp and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif args.keep:
            log(f"kept the work folder {tmp}")
    print(f"screenshots in {out}/ ({time.monotonic() - t_start:.0f} s):")
    for path in written:
        print(f"  {path}")
    for f in failures:
        print(f"WARNING: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

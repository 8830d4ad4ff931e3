"""HTTP API throughput: GET /jobs/{id} requests per second with many concurrent clients, a large
file through the API against the job store directly, and presigned URLs against boto3 on S3.

- Jobs: two jobs on a real Prefect server (its own PREFECT_HOME, SQLite): one queued (live: the
  API asks Prefect about it at most once per JOBCLOUD_API_JOB_REFRESH_S) and one Completed (an
  ended job, answered from memory). --clients concurrent httpx.AsyncClient tasks issue
  GET /jobs/{id} until --requests are done, for each. Goal: >= 500 req/s, p95 <= 200 ms.
- Files: one file of --size (default 1 GiB) of random bytes. Upload: `PUT /files/KEY` of the file
  with curl (or httpx: --client), against `JobStore.upload_file` of the same file into the same
  local store (the baseline), and that upload followed by an fsync of the file and its folder
  (as durable as the API's upload when it answers). Download: `GET /files/KEY` to a file,
  against `JobStore.download`. Both sides record or check size + SHA-256 (the API hashes the
  upload as it writes it, the store hashes what it copies). Goal: ratio (baseline time / API
  time) >= 0.8x. A bare ASGI app on the same uvicorn (bytes moved, no disk, no hash) gives the
  ceiling of HTTP itself on this machine.
- Presigned (SeaweedFS, a real S3 server on this machine): `POST /files/KEY:upload-url` then one
  plain HTTP PUT of the file (httpx) to the URL, and `GET /files/KEY:download-url` then one
  plain GET to a file, against boto3's `upload_file` / `download_file` (its TransferManager,
  default settings, concurrent parts) of the same file. Goal: ratio >= 0.9x.

The API runs as `jobcloud api serve` (uvicorn, --api-workers processes) on a real port.
Scratch files go to a temp folder (or --dir), removed afterwards.

    .venv/bin/python bench/api.py [--size 1GiB] [--repeat N] [--clients 50] [--requests 2000]
                                  [--skip files,presigned,jobs] [--api-workers 1] [--client curl]
                                  [--dir /tmp/...] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.receivers import free_port  # noqa: E402 - the same free-port rule as the tests' servers

MiB = 1024 * 1024
CHUNK = MiB
TOKEN = "bench-token-0123456789abcdef"
USER = "bench"


def parse_size(text: str) -> int:
    """'1GiB', '256MiB', '512M', '1g' or a byte count."""
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    for suffix, n in (("k", 1024), ("m", MiB), ("g", 1024 * MiB)):
        if t.endswith(suffix):
            return int(float(t[:-1]) * n)
    return int(t)


def make_file(path: Path, size: int) -> str:
    """``size`` random-ish bytes (no two blocks alike); returns the SHA-256."""
    block = os.urandom(4 * MiB)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        left, i = size, 0
        while left:
            n = min(left, len(block))
            data = i.to_bytes(8, "little") + block[8:n] if n > 8 else block[:n]
            fh.write(data)
            digest.update(data)
            left -= n
            i += 1
    return digest.hexdigest()


def _h(size: int) -> str:
    for unit, n in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if size >= n and size % n == 0:
            return f"{size // n} {unit}"
    return f"{size / MiB:.1f} MiB"


# -- the HTTP client of the file transfers ------------------------------------------------------

CLIENT = {"name": "curl"}
"""The client that moves files: `curl` (what docs/api.md shows; C, so it measures the server,
not itself) or `httpx` streaming (--client)."""


def put_file(url: str, src: Path, headers: dict[str, str]) -> str:
    """PUT the bytes of ``src`` to ``url`` (with Content-Length); returns the response body."""
    if CLIENT["name"] == "curl":
        hdrs = [a for k, v in headers.items() for a in ("-H", f"{k}: {v}")]
        # -H 'Expect:': no 100-continue round trip (S3 servers and uvicorn both answer it, slowly).
        done = subprocess.run(["curl", "-sS", "-f", "-H", "Expect:", *hdrs, "-T", str(src), url], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"curl PUT {url}: {done.stderr.strip()} {done.stdout[-500:]}")
        return done.stdout
    import httpx

    with open(src, "rb") as fh:  # a file: httpx sends its Content-Length
        r = httpx.put(url, content=fh, headers=headers, timeout=None)
    r.raise_for_status()
    return r.text


def get_file(url: str, dst: Path | None, headers: dict[str, str]) -> int:
    """GET ``url`` into ``dst`` (None: count and drop the bytes); returns the byte count."""
    if CLIENT["name"] == "curl":
        hdrs = [a for k, v in headers.items() for a in ("-H", f"{k}: {v}")]
        out = str(dst) if dst is not None else "/dev/null"
        done = subprocess.run(["curl", "-sS", "-f", *hdrs, "-o", out, "-w", "%{size_download}", url], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"curl GET {url}: {done.stderr.strip()}")
        return int(done.stdout)
    import httpx

    got = 0
    with httpx.stream("GET", url, headers=headers, timeout=None) as r:
        r.raise_for_status()
        with open(dst if dst is not None else os.devnull, "wb") as fh:
            for data in r.iter_bytes():  # as they come: re-chunking would cost the client as much again
                fh.write(data)
                got += len(data)
    return got


# -- the API process ------------------------------------------------------------------------


class ApiServer:
    """`jobcloud api serve` on a free port, with a key list, a job store and a spool folder."""

    def __init__(
        self,
        work: Path,
        storage: str,
        prefect_url: str | None,
        extra_env: dict[str, str] | None = None,
        workers: int = 1,
        name: str = "api",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        keys = work / "keys.json"
        keys.write_text(json.dumps({TOKEN: {"user": USER, "role": "user"}}))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "JOBCLOUD_", "AWS_"))},
            "PYTHONPATH": str(ROOT),
            "JOBCLOUD_HOME": str(work / f"{name}-home"),
            "JOBCLOUD_STORAGE": storage,
            "JOBCLOUD_CONFIG": str(ROOT / "application_config.yaml"),
            "JOBCLOUD_API_KEYS_FILE": str(keys),
            "JOBCLOUD_API_UPLOAD_DIR": str(work / "spool"),  # same disk as the store
            "JOBCLOUD_API_RATE_PER_MINUTE": "100000000",
            **(extra_env or {}),
        }
        if prefect_url:
            self.env["PREFECT_API_URL"] = prefect_url
            self.env["PREFECT_HOME"] = str(work / "prefect-home")
        self.log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - closed in __exit__
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ApiServer:
        import httpx

        cmd = [sys.executable, "-m", "jobcloud.deployments.cli", "api", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the API exited early; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/status", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"the API did not answer in 120 s; see {self.log.name}")

    def peak_rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def __exit__(self, *_: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- the transport alone --------------------------------------------------------------------


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app that only moves bytes: PUT reads and drops the body, GET sends SIZE bytes
    from memory (?size=N). Served by the same uvicorn, it shows what HTTP itself costs here."""
    if scope["type"] != "http":
        return
    if scope["method"] == "PUT":
        n = 0
        while True:
            message = await receive()
            n += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(n).encode()})
        return
    size = int(scope["query_string"].decode().partition("=")[2])
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(size).encode())]})
    block = b"x" * CHUNK
    while size > 0:
        n = min(size, CHUNK)
        size -= n
        await send({"type": "http.response.body", "body": block[:n], "more_body": size > 0})


def bench_bare(work: Path, src: Path, size: int) -> dict[str, float]:
    """Upload and download times of ``size`` bytes through `bare_app` on uvicorn."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "bench"), "--port", str(port), "--log-level", "warning", "api:bare_app"]
    with open(work / "bare.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/?size=1", timeout=2)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit(f"the bare app did not start; see {log.name}") from None
                    time.sleep(0.3)

            t = time.perf_counter()
            assert put_file(url, src, {}) == str(size)
            up = time.perf_counter() - t
            t = time.perf_counter()
            got = get_file(f"{url}/?size={size}", None, {})
            down = time.perf_counter() - t
            assert got == size
        finally:
            proc.terminate()
            proc.wait(15)
    return {"upload": up, "download": down}


# -- files ----------------------------------------------------------------------------------


def _sync() -> None:
    os.sync()  # earlier writes are flushed before a clock starts, for baseline and API alike


def api_upload(url: str, src: Path, key: str, sha: str) -> float:
    _sync()
    t = time.perf_counter()
    body = put_file(f"{url}/files/{key}", src, {"authorization": f"Bearer {TOKEN}"})
    took = time.perf_counter() - t
    assert json.loads(body)["sha256"] == sha, body
    return took


def api_download(url: str, key: str, dst: Path, size: int) -> float:
    _sync()
    t = time.perf_counter()
    got = get_file(f"{url}/files/{key}", dst, {"authorization": f"Bearer {TOKEN}"})
    took = time.perf_counter() - t
    assert got == size, (got, size)
    return took


def store_upload(store: Any, src: Path, key: str, sha: str, durable: bool = False) -> float:
    """`JobStore.upload_file`; ``durable``: and then fsync the file and its folder, as the API's
    upload does before it answers (the store's own upload leaves the bytes in the page cache)."""
    _sync()
    t = time.perf_counter()
    record = store.upload_file(src, key)
    if durable:
        path = Path(store.path(key))
        for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | os.O_DIRECTORY)):
            fd = os.open(target, flags)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    took = time.perf_counter() - t
    assert record.sha256 == sha
    return took


def store_download(store: Any, key: str, dst_dir: Path, size: int) -> float:
    _sync()
    t = time.perf_counter()
    records = store.download(key, dst_dir)
    took = time.perf_counter() - t
    assert records[0].size == size
    return took


def bench_files(work: Path, store_dir: Path, api: ApiServer, size: int, repeat: int) -> list[dict[str, Any]]:
    from jobcloud.blocks.store.job_store import JobStore

    store = JobStore(str(store_dir))
    src = work / "src.bin"
    print(f"writing a {_h(size)} file ...", file=sys.stderr, flush=True)
    sha = make_file(src, size)
    rows = []
    for i in range(repeat):
        # In turns, baseline first on even runs: whoever runs second finds warmer caches.
        order = ("base", "api") if i % 2 == 0 else ("api", "base")
        up: dict[str, float] = {}
        down: dict[str, float] = {}
        for who in order:
            key = f"bench/{who}-{i}.bin"
            if who == "base":
                up[who] = store_upload(store, src, f"users/{USER}/{key}", sha)
                up["durable"] = store_upload(store, src, f"users/{USER}/bench/durable-{i}.bin", sha, durable=True)
                store.remove(f"users/{USER}/bench/durable-{i}.bin")
            else:
                up[who] = api_upload(api.url, src, key, sha)
        for who in order:
            key = f"bench/{who}-{i}.bin"
            out = work / f"down-{who}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            if who == "base":
                down[who] = store_download(store, f"users/{USER}/{key}", out, size)
            else:
                down[who] = api_download(api.url, key, out / "f.bin", size)
            shutil.rmtree(out)
        for who in order:
            store.remove(f"users/{USER}/bench/{who}-{i}.bin")
        bare = bench_bare(work, src, size)
        for op, t in (("upload", up), ("download", down)):
            rows.append({"op": op, "size": size, "base_s": t["base"], "durable_s": t.get("durable"), "api_s": t["api"], "bare_s": bare[op]})
            durable = f" (+fsync {t['durable']:.2f}s)" if "durable" in t else ""
            print(
                f"  {op} {_h(size)}: store {t['base']:.2f}s{durable} api {t['api']:.2f}s bare HTTP {bare[op]:.2f}s",
                file=sys.stderr,
                flush=True,
            )
    src.unlink()
    return rows


# -- presigned URLs on S3 ---------------------------------------------------------------------


def bench_presigned(work: Path, size: int, repeat: int) -> list[dict[str, Any]]:
    """Presigned PUT/GET of one file through SeaweedFS against boto3's upload_file/download_file."""
    import boto3
    import httpx

    from tests.integration.seaweed import ACCESS_KEY, REGION, SECRET_KEY, Seaweed

    print("starting SeaweedFS ...", file=sys.stderr, flush=True)
    server = Seaweed(work / "seaweed").start()
    src = work / "src-s3.bin"
    rows = []
    try:
        bucket = server.make_bucket("api-bench")
        s3 = boto3.client(
            "s3", endpoint_url=server.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
        )
        # SeaweedFS grows its first volumes on the first writes: before any clock runs.
        for i in range(8):
            s3.put_object(Bucket=bucket, Key=f"warm/{i}", Body=os.urandom(4 * MiB))
        print(f"writing a {_h(size)} file ...", file=sys.stderr, flush=True)
        sha = make_file(src, size)
        env = {**server.env()}
        with ApiServer(work, f"s3://{bucket}/store", None, extra_env=env, name="api-s3") as api:
            auth = {"authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=api.url, headers=auth, timeout=None) as http:
                for i in range(repeat):
                    order = ("base", "api") if i % 2 == 0 else ("api", "base")
                    t: dict[str, dict[str, float]] = {"upload": {}, "download": {}}
                    for who in order:
                        _sync()
                        start = time.perf_counter()
                        if who == "base":
                            s3.upload_file(str(src), bucket, f"base/{i}.bin")
                        else:
                            url = http.post(f"/files/bench/{i}.bin:upload-url").raise_for_status().json()
                            assert url["method"] == "PUT"
                            put_file(url["url"], src, url["headers"])
                        t["upload"][who] = time.perf_counter() - start
                    for who in order:
                        dst = work / f"down-{who}.bin"
                        _sync()
                        start = time.perf_counter()
                        if who == "base":
                            s3.download_file(bucket, f"base/{i}.bin", str(dst))
                        else:
                            url = http.get(f"/files/bench/{i}.bin:download-url").raise_for_status().json()
                            get_file(url["url"], dst, url["headers"])
                        t["download"][who] = time.perf_counter() - start
                        assert dst.stat().st_size == size
                        dst.unlink()
                    # Both stored the same bytes.
                    got = s3.get_object(Bucket=bucket, Key=f"store/users/{USER}/bench/{i}.bin")["Body"]
                    digest = hashlib.sha256()
                    while data := got.read(CHUNK * 8):
                        digest.update(data)
                    assert digest.hexdigest() == sha
                    for op in ("upload", "download"):
                        rows.append({"op": op, "size": size, "base_s": t[op]["base"], "api_s": t[op]["api"]})
                        print(
                            f"  presigned {op} {_h(size)}: boto3 {t[op]['base']:.2f}s presigned {t[op]['api']:.2f}s",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        server.stop()
        src.unlink(missing_ok=True)
    return rows


# -- GET /jobs/{id} -------------------------------------------------------------------------


def make_jobs(prefect_url: str) -> dict[str, str]:
    """Two flow runs tagged as the API tags a job of the bench user: one queued, one Completed."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Completed

    @flow(name="api-bench-probe")
    def probe() -> None:
        pass

    with temporary_settings(updates={PREFECT_API_URL: prefect_url}), get_client(sync_client=True) as client:
        tags = ["app:linefit", "version:v1", "entrypoint:train", f"user:{USER}"]
        queued = client.create_flow_run(probe, tags=tags)
        done = client.create_flow_run(probe, tags=tags)
        client.set_flow_run_state(done.id, Completed(message="bench"), force=True)
        return {"queued": str(queued.id), "completed": str(done.id)}


async def hammer(url: str, job_id: str, clients: int, total: int) -> dict[str, Any]:
    """``clients`` concurrent keep-alive clients (aiohttp: about 0.2 ms of CPU per request here,
    where httpx's AsyncClient takes 2-5 ms and would measure itself, not the API) issuing
    GET /jobs/{id} until ``total`` are done."""
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    left = total
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout, headers={"authorization": f"Bearer {TOKEN}"}) as client:
        # Warm up: the API opens its Prefect client on first use.
        async with client.get(f"/jobs/{job_id}") as r:
            r.raise_for_status()
            await r.read()

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t = time.perf_counter()
                try:
                    async with client.get(f"/jobs/{job_id}") as r:
                        await r.read()
                        status = str(r.status)
                except (TimeoutError, aiohttp.ClientError) as exc:  # counted, not fatal
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - t)
                if status != "200":
                    errors[status] = errors.get(status, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "clients": clients, "requests": len(latencies), "elapsed_s": elapsed, "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2], "p95_ms": 1000 * latencies[int(len(latencies) * 0.95)],
        "errors": errors,
    }  # fmt: skip


# -- report ---------------------------------------------------------------------------------


def _ratio(value: float, goal: float) -> str:
    return f"[{'green' if value >= goal else 'red'}]{value:.2f}x[/]"


def report(files: list[dict[str, Any]], presigned: list[dict[str, Any]], jobs: dict[str, dict[str, Any]], rss: float | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if jobs:
        table = Table(title="GET /jobs/{id} against a real Prefect server (goal: >= 500 req/s, p95 <= 200 ms)")
        for col in ("job", "clients", "requests", "elapsed s", "req/s", "p50 ms", "p95 ms", "not 200"):
            table.add_column(col, justify="left" if col == "job" else "right")
        for name, j in jobs.items():
            ok = j["rps"] >= 500 and j["p95_ms"] <= 200
            table.add_row(
                name,
                str(j["clients"]),
                str(j["requests"]),
                f"{j['elapsed_s']:.1f}",
                f"[{'green' if ok else 'red'}]{j['rps']:.0f}[/]",
                f"{j['p50_ms']:.0f}",
                f"[{'green' if ok else 'red'}]{j['p95_ms']:.0f}[/]",
                str(sum(j["errors"].values())) + (f" {j['errors']}" if j["errors"] else ""),
            )
        console.print(table)
    if files:
        table = Table(title="Files through the API vs the job store directly (local disk; goal >= 0.8x)")
        cols = ("op", "size", "store MiB/s", "API MiB/s", "ratio", "store+fsync MiB/s", "ratio vs +fsync", "bare HTTP MiB/s", "runs")
        for col in cols:
            table.add_column(col, justify="left" if col in ("op", "size") else "right")
        for op in ("upload", "download"):
            rs = [r for r in files if r["op"] == op]
            b, a = median(r["base_s"] for r in rs), median(r["api_s"] for r in rs)
            mib = rs[0]["size"] / MiB
            bare = median(r["bare_s"] for r in rs)
            durable = [r["durable_s"] for r in rs if r.get("durable_s") is not None]
            d = median(durable) if durable else None
            table.add_row(
                op,
                _h(rs[0]["size"]),
                f"{mib / b:.0f}",
                f"{mib / a:.0f}",
                _ratio(b / a, 0.8),
                f"{mib / d:.0f}" if d else "",
                _ratio(d / a, 0.8) if d else "",
                f"{mib / bare:.0f}",
                str(len(rs)),
            )
        console.print(table)
        console.print(
            "ratio = store time / API time; medians over the runs. store+fsync: the store's upload, then fsync of the file"
            " and its folder, as the API's upload does before it answers. bare HTTP: an ASGI app that only moves the bytes"
            f" (no disk, no hash) on the same uvicorn, client {CLIENT['name']}: HTTP's own ceiling here"
        )
    if presigned:
        table = Table(title="Presigned URLs vs boto3 on SeaweedFS (goal >= 0.9x)")
        for col in ("op", "size", "boto3 MiB/s", "presigned MiB/s", "ratio", "runs"):
            table.add_column(col, justify="left" if col in ("op", "size") else "right")
        for op in ("upload", "download"):
            rs = [r for r in presigned if r["op"] == op]
            b, a = median(r["base_s"] for r in rs), median(r["api_s"] for r in rs)
            mib = rs[0]["size"] / MiB
            table.add_row(op, _h(rs[0]["size"]), f"{mib / b:.0f}", f"{mib / a:.0f}", _ratio(b / a, 0.9), str(len(rs)))
        console.print(table)
        console.print(
            "ratio = boto3 time / presigned time (the API call for the URL included); boto3: upload_file /"
            f" download_file with its default TransferManager (concurrent parts); presigned: one plain {CLIENT['name']} request"
        )
    if rss is not None:
        console.print(f"API process peak RSS (local store): {rss:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB", help="Size of the file (e.g. 1GiB, 256MiB).")
    ap.add_argument("--repeat", type=int, default=1, help="Upload/download runs (medians are reported).")
    ap.add_argument("--clients", type=int, default=50, help="Concurrent clients for GET /jobs/{id}.")
    ap.add_argument("--requests", type=int, default=2000, help="GET /jobs/{id} requests per job.")
    ap.add_argument("--skip", default="", help="Leave out parts: a comma-separated list of files, presigned, jobs.")
    ap.add_argument("--api-workers", type=int, default=1, help="`jobcloud api serve --workers` of the API under test.")
    ap.add_argument("--client", choices=("curl", "httpx"), default="curl" if shutil.which("curl") else "httpx", help="Client of the files.")
    ap.add_argument("--dir", default=None, help="Scratch folder (default: a temp dir, removed after).")
    ap.add_argument("--json", default=None, help="Also write the results to this file.")
    args = ap.parse_args()
    size = parse_size(args.size)
    CLIENT["name"] = args.client
    skip = {p for p in args.skip.split(",") if p}
    if skip - {"files", "presigned", "jobs"}:
        raise SystemExit(f"--skip: unknown parts {sorted(skip - {'files', 'presigned', 'jobs'})}")

    work = Path(args.dir or tempfile.mkdtemp(prefix="jobcloud-bench-api-"))
    work.mkdir(parents=True, exist_ok=True)
    need = 3 * size / 1024**3 + 1
    free = shutil.disk_usage(work).free / 1024**3
    if not {"files", "presigned"} <= skip and free < need:
        raise SystemExit(f"{work}: only {free:.1f} GiB free; the bench needs about {need:.1f} GiB")
    store_dir = work / "store"
    files: list[dict[str, Any]] = []
    presigned: list[dict[str, Any]] = []
    jobs: dict[str, dict[str, Any]] = {}
    rss = None
    server = None
    try:
        prefect_url = None
        if "jobs" not in skip:
            from jobcloud.deployments.server.processes import PrefectServer

            print("starting a prefect server ...", file=sys.stderr, flush=True)
            server = PrefectServer(home=work / "prefect-home", port=free_port()).start()
            prefect_url = server.api_url
        if not {"jobs", "files"} <= skip:
            with ApiServer(work, str(store_dir), prefect_url, workers=args.api_workers) as api:
                if "jobs" not in skip:
                    assert prefect_url
                    for name, job in make_jobs(prefect_url).items():
                        print(f"GET /jobs/{{id}} of a {name} job: {args.requests} requests, {args.clients} clients ...", file=sys.stderr)
                        jobs[name] = asyncio.run(hammer(api.url, job, args.clients, args.requests))
                if "files" not in skip:
                    files = bench_files(work, store_dir, api, size, args.repeat)
                rss = api.peak_rss_mib() if args.api_workers == 1 else None
        if server is not None:
            server.stop()
            server = None
        if "presigned" not in skip:
            presigned = bench_presigned(work, size, args.repeat)
    finally:
        if server is not None:
            server.stop()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    report(files, presigned, jobs, rss)
    if args.json:
        Path(args.json).write_text(json.dumps({"jobs": jobs, "files": files, "presigned": presigned, "api_peak_rss_mib": rss}, indent=2))


if __name__ == "__main__":
    main()

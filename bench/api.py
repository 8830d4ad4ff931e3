"""HTTP API throughput: a large file through the API against the job store directly, and
GET /jobs/{id} requests per second with many concurrent clients.

- Files: one file of --size (default 1 GiB) of random bytes. Upload: `PUT /files/KEY` streamed
  from the file by httpx, against `JobStore.upload_file` of the same file into the same local
  store (the baseline). Download: `GET /files/KEY` streamed by httpx to a file, against
  `JobStore.download`. Both sides record or check size + SHA-256 (the API hashes the upload
  while it spools, the store hashes what it writes). Goal: ratio (baseline time / API time)
  >= 0.8x.
  A bare ASGI app on the same uvicorn (bytes moved, no disk, no hash) gives the ceiling of
  HTTP itself on this machine.
- Jobs: one queued job on a real Prefect server (its own PREFECT_HOME, SQLite), --clients
  concurrent httpx.AsyncClient tasks issuing GET /jobs/{id} until --requests are done.

The API runs as `jobcloud api serve` (uvicorn, one process) on a real port. Scratch files go
to a temp folder (or --dir), removed afterwards.

    .venv/bin/python bench/api.py [--size 1GiB] [--repeat N] [--clients 50] [--requests 2000]
                                  [--skip files|jobs] [--dir /tmp/...] [--json FILE]
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


# -- the API process ------------------------------------------------------------------------


class ApiServer:
    """`jobcloud api serve` on a free port, with a key list, a local store and a spool folder."""

    def __init__(self, work: Path, store: Path, prefect_url: str | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        keys = work / "keys.json"
        keys.write_text(json.dumps({TOKEN: {"user": USER, "role": "user"}}))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "JOBCLOUD_"))},
            "PYTHONPATH": str(ROOT),
            "JOBCLOUD_HOME": str(work / "jc-home"),
            "JOBCLOUD_STORAGE": str(store),
            "JOBCLOUD_CONFIG": str(ROOT / "application_config.yaml"),
            "JOBCLOUD_API_KEYS_FILE": str(keys),
            "JOBCLOUD_API_UPLOAD_DIR": str(work / "spool"),  # same disk as the store
            "JOBCLOUD_API_RATE_PER_MINUTE": "100000000",
        }
        if prefect_url:
            self.env["PREFECT_API_URL"] = prefect_url
            self.env["PREFECT_HOME"] = str(work / "prefect-home")
        self.log = open(work / "api.log", "wb")  # noqa: SIM115 - closed in __exit__
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ApiServer:
        import httpx

        cmd = [sys.executable, "-m", "jobcloud.deployments.cli", "api", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
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

            def body():
                with open(src, "rb") as fh:
                    while data := fh.read(CHUNK):
                        yield data

            t = time.perf_counter()
            assert httpx.put(url, content=body(), timeout=None).text == str(size)
            up = time.perf_counter() - t
            t, got = time.perf_counter(), 0
            with httpx.stream("GET", f"{url}/?size={size}", timeout=None) as r:
                for data in r.iter_bytes():
                    got += len(data)
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
    import httpx

    def body():
        with open(src, "rb") as fh:
            while data := fh.read(CHUNK):
                yield data

    _sync()
    t = time.perf_counter()
    r = httpx.put(f"{url}/files/{key}", content=body(), headers={"authorization": f"Bearer {TOKEN}"}, timeout=None)
    took = time.perf_counter() - t
    r.raise_for_status()
    assert r.json()["sha256"] == sha, r.text
    return took


def api_download(url: str, key: str, dst: Path, size: int) -> float:
    import httpx

    _sync()
    t = time.perf_counter()
    got = 0
    with httpx.stream("GET", f"{url}/files/{key}", headers={"authorization": f"Bearer {TOKEN}"}, timeout=None) as r:
        r.raise_for_status()
        with open(dst, "wb") as fh:
            for data in r.iter_bytes():  # as they come: re-chunking would cost the client as much again
                fh.write(data)
                got += len(data)
    took = time.perf_counter() - t
    assert got == size, (got, size)
    return took


def store_upload(store: Any, src: Path, key: str, sha: str) -> float:
    _sync()
    t = time.perf_counter()
    record = store.upload_file(src, key)
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
            rows.append({"op": op, "size": size, "base_s": t["base"], "api_s": t["api"], "bare_s": bare[op]})
            print(f"  {op} {_h(size)}: store {t['base']:.2f}s api {t['api']:.2f}s bare HTTP {bare[op]:.2f}s", file=sys.stderr, flush=True)
    src.unlink()
    return rows


# -- GET /jobs/{id} -------------------------------------------------------------------------


def make_job(prefect_url: str) -> str:
    """One queued flow run tagged as the API tags a job of the bench user."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    @flow(name="api-bench-probe")
    def probe() -> None:
        pass

    with temporary_settings(updates={PREFECT_API_URL: prefect_url}), get_client(sync_client=True) as client:
        tags = ["app:linefit", "version:v1", "entrypoint:train", f"user:{USER}"]
        return str(client.create_flow_run(probe, tags=tags).id)


async def hammer(url: str, job_id: str, clients: int, total: int) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: dict[int, int] = {}
    left = total
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60, headers={"authorization": f"Bearer {TOKEN}"}) as client:
        # Warm up: the API opens its Prefect client on first use.
        (await client.get(f"/jobs/{job_id}")).raise_for_status()

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t = time.perf_counter()
                r = await client.get(f"/jobs/{job_id}")
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors[r.status_code] = errors.get(r.status_code, 0) + 1

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


def report(files: list[dict[str, Any]], jobs: dict[str, Any] | None, rss: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if files:
        table = Table(title="Files through the API vs the job store directly (local disk)")
        for col in ("op", "size", "store MiB/s", "API MiB/s", "ratio", "bare HTTP MiB/s", "runs"):
            table.add_column(col, justify="left" if col in ("op", "size") else "right")
        for op in ("upload", "download"):
            rs = [r for r in files if r["op"] == op]
            b, a = median(r["base_s"] for r in rs), median(r["api_s"] for r in rs)
            mib = rs[0]["size"] / MiB
            ratio = b / a
            style = "green" if ratio >= 0.8 else "red"
            bare = median(r["bare_s"] for r in rs)
            table.add_row(
                op, _h(rs[0]["size"]), f"{mib / b:.0f}", f"{mib / a:.0f}", f"[{style}]{ratio:.2f}x[/]", f"{mib / bare:.0f}", str(len(rs))
            )
        console.print(table)
        console.print(
            "ratio = store time / API time (goal >= 0.8x); medians over the runs. bare HTTP: an ASGI app"
            " that only moves the bytes (no disk, no hash) on the same uvicorn and httpx: HTTP's own ceiling here"
        )
    if jobs:
        table = Table(title="GET /jobs/{id} against a real Prefect server (one job)")
        for col in ("clients", "requests", "elapsed s", "req/s", "p50 ms", "p95 ms", "non-200"):
            table.add_column(col, justify="right")
        table.add_row(
            str(jobs["clients"]),
            str(jobs["requests"]),
            f"{jobs['elapsed_s']:.1f}",
            f"{jobs['rps']:.0f}",
            f"{jobs['p50_ms']:.0f}",
            f"{jobs['p95_ms']:.0f}",
            str(sum(jobs["errors"].values())),
        )
        console.print(table)
    console.print(f"API process peak RSS: {rss:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GiB", help="Size of the file (e.g. 1GiB, 256MiB).")
    ap.add_argument("--repeat", type=int, default=1, help="Upload/download runs (medians are reported).")
    ap.add_argument("--clients", type=int, default=50, help="Concurrent clients for GET /jobs/{id}.")
    ap.add_argument("--requests", type=int, default=2000, help="Total GET /jobs/{id} requests.")
    ap.add_argument("--skip", choices=("files", "jobs"), default=None, help="Leave out one part.")
    ap.add_argument("--dir", default=None, help="Scratch folder (default: a temp dir, removed after).")
    ap.add_argument("--json", default=None, help="Also write the results to this file.")
    args = ap.parse_args()
    size = parse_size(args.size)

    work = Path(args.dir or tempfile.mkdtemp(prefix="jobcloud-bench-api-"))
    work.mkdir(parents=True, exist_ok=True)
    need = 3 * size / 1024**3 + 1
    free = shutil.disk_usage(work).free / 1024**3
    if args.skip != "files" and free < need:
        raise SystemExit(f"{work}: only {free:.1f} GiB free; the bench needs about {need:.1f} GiB")
    store_dir = work / "store"
    files: list[dict[str, Any]] = []
    jobs = None
    server = None
    try:
        prefect_url = None
        if args.skip != "jobs":
            from jobcloud.deployments.server.processes import PrefectServer

            print("starting a prefect server ...", file=sys.stderr, flush=True)
            server = PrefectServer(home=work / "prefect-home", port=free_port()).start()
            prefect_url = server.api_url
        with ApiServer(work, store_dir, prefect_url) as api:
            if args.skip != "files":
                files = bench_files(work, store_dir, api, size, args.repeat)
            if args.skip != "jobs":
                assert prefect_url
                job = make_job(prefect_url)
                print(f"GET /jobs/{{id}}: {args.requests} requests, {args.clients} clients ...", file=sys.stderr, flush=True)
                jobs = asyncio.run(hammer(api.url, job, args.clients, args.requests))
            rss = api.peak_rss_mib()
    finally:
        if server is not None:
            server.stop()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    report(files, jobs, rss)
    if args.json:
        Path(args.json).write_text(json.dumps({"files": files, "jobs": jobs, "api_peak_rss_mib": rss}, indent=2))


if __name__ == "__main__":
    main()

"""Staging throughput: JobStore uploads and downloads against baselines, in the same run.

Data sets: 1 x 1 GiB, 100 x 10 MiB, 10,000 x 10 KiB. Stores: the local disk (baseline
`cp -r`) and SeaweedFS started here on free ports (baseline boto3's transfer manager, one
manager for all files, default settings). Every measured transfer runs in its own process;
its peak RSS comes from wait4(). JobStore records size + SHA-256 of every file (and verifies
them); the baselines do not.

    .venv/bin/python bench/staging.py [--sets big,medium,small] [--stores local,s3] [--repeat N]
                                      [--dir /tmp/...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
SETS = {"big": (1, 1024 * MiB), "medium": (100, 10 * MiB), "small": (10_000, 10 * 1024)}


def make_set(root: Path, name: str) -> Path:
    count, size = SETS[name]
    d = root / "src" / name
    if d.exists():
        return d
    d.mkdir(parents=True)
    block = os.urandom(min(size, 4 * MiB))
    for i in range(count):
        sub = d / f"d{i // 1000:02d}" if count > 1000 else d
        sub.mkdir(exist_ok=True)
        with open(sub / f"f{i:05d}.bin", "wb") as fh:
            left = size
            while left:
                n = min(left, len(block))
                # Not the same bytes in every block: vary the head so nothing dedups.
                fh.write(i.to_bytes(4, "little") + left.to_bytes(8, "little") + block[12:n] if n > 12 else block[:n])
                left -= n
    return d


# -- one measured transfer, in a child process ------------------------------------------


def child(spec: dict) -> None:
    """Run one transfer; print {"seconds": ...}. Peak RSS is measured by the parent."""
    op, tool = spec["op"], spec["tool"]
    src, dst = spec["src"], spec["dst"]
    # Modules load before the clock starts: a job's staging runs in a process that has them.
    import boto3  # noqa: F401
    from s3transfer.manager import TransferManager

    from jobcloud.blocks.store.job_store import JobStore

    t = time.perf_counter()
    if tool == "jobstore":
        opts = spec.get("options") or {}
        store = JobStore(spec["store"], opts, concurrency=spec.get("concurrency", 8), rehash=spec.get("rehash", False))
        if op == "upload":
            recs = store.upload_tree(Path(src), spec["key"])
        else:
            recs = store.download(spec["key"], Path(dst))
        assert all(len(r.sha256) == 64 for r in recs)
        n = len(recs)
    elif tool == "boto3":
        import boto3

        c = boto3.client("s3", **spec["client"])
        futures = []
        with TransferManager(c) as tm:
            if op == "upload":
                for p in sorted(Path(src).rglob("*")):
                    if p.is_file():
                        key = f"{spec['prefix']}/{p.relative_to(src).as_posix()}"
                        futures.append(tm.upload(str(p), spec["bucket"], key))
            else:
                pages = c.get_paginator("list_objects_v2").paginate(Bucket=spec["bucket"], Prefix=spec["prefix"] + "/")
                for page in pages:
                    for o in page.get("Contents", []):
                        out = Path(dst) / o["Key"][len(spec["prefix"]) + 1 :]
                        out.parent.mkdir(parents=True, exist_ok=True)
                        futures.append(tm.download(spec["bucket"], o["Key"], str(out)))
            for f in futures:
                f.result()
        n = len(futures)
    else:
        raise SystemExit(f"unknown tool {tool}")
    print(json.dumps({"seconds": time.perf_counter() - t, "files": n}))


def measure(spec: dict) -> dict:
    """Run ``spec`` in a child process: seconds and peak RSS (MiB, from GNU time: wait4 of a
    forked child would count the parent's pages too)."""
    os.sync()  # earlier writes are flushed before the clock starts, for baseline and ours alike
    time.sleep(2)  # and the discards of the folders just removed (this disk mounts with discard)
    rss_file = tempfile.mktemp(prefix="jobcloud-bench-rss-")
    timed = ["/usr/bin/time", "-f", "%M", "-o", rss_file]
    if spec["tool"] == "cp":
        t = time.perf_counter()
        subprocess.run([*timed, "cp", "-r", spec["src"], spec["dst"]], check=True)
        res = {"seconds": time.perf_counter() - t}
    else:
        proc = subprocess.run(
            [*timed, sys.executable, __file__, "--child", json.dumps(spec)],
            stdout=subprocess.PIPE, cwd=ROOT, check=True,
        )  # fmt: skip
        res = json.loads(proc.stdout)
    res["rss_mib"] = int(Path(rss_file).read_text().split()[-1]) / 1024
    os.unlink(rss_file)
    return res


# -- the bench ----------------------------------------------------------------------------


def pair(i: int, base, ours) -> tuple[dict, dict]:
    """Run baseline and ours, in turns first (whoever runs second finds warmer caches)."""
    if i % 2:
        o = ours()
        return base(), o
    b = base()
    return b, ours()


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def bench_local(work: Path, name: str, src: Path, repeat: int) -> list[dict]:
    rows = []
    store = work / "store"
    for i in range(repeat):
        # upload: a local folder into the store (like a job's outputs)
        fresh(store)
        base, ours = pair(
            i,
            lambda: measure({"tool": "cp", "src": str(src), "dst": str(fresh(work / "cp-up"))}),
            lambda: measure({"tool": "jobstore", "op": "upload", "store": str(store), "key": f"in/{name}", "src": str(src), "dst": ""}),
        )
        rows.append(row("local", name, "upload", base, ours))
        # download: staging from the store into a work folder
        base, ours = pair(
            i,
            lambda: measure({"tool": "cp", "src": str(store / "in" / name), "dst": str(fresh(work / "cp-down"))}),
            lambda: measure(
                {"tool": "jobstore", "op": "download", "store": str(store), "key": f"in/{name}", "src": "", "dst": str(fresh(work / "dl"))}
            ),
        )
        rows.append(row("local", name, "download", base, ours))
        ours_rehash = measure(
            {
                "tool": "jobstore",
                "op": "download",
                "store": str(store),
                "key": f"in/{name}",
                "src": "",
                "dst": str(fresh(work / "dl")),
                "rehash": True,
            }
        )
        rows.append(row("local", name, "download, rehash", base, ours_rehash))
        for p in ("cp-up", "cp-down", "dl"):
            fresh(work / p)
        fresh(store)
    return rows


def bench_s3(work: Path, name: str, src: Path, repeat: int, server) -> list[dict]:
    from jobcloud.blocks.store.store_urls import s3_options

    rows = []
    client = {
        "endpoint_url": server.endpoint,
        "aws_access_key_id": server.env()["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": server.env()["AWS_SECRET_ACCESS_KEY"],
        "region_name": "us-east-1",
    }
    opts = s3_options(server.endpoint, "us-east-1", client["aws_access_key_id"], client["aws_secret_access_key"])
    opts.pop("skip_instance_cache", None)
    for i in range(repeat):
        bucket = server.make_bucket(f"bench-{name}-{i}-{os.getpid()}")
        base, ours = pair(
            i,
            lambda bucket=bucket: measure(
                {"tool": "boto3", "op": "upload", "client": client, "bucket": bucket, "prefix": "base", "src": str(src), "dst": ""}
            ),
            lambda bucket=bucket: measure(
                {"tool": "jobstore", "op": "upload", "store": f"s3://{bucket}", "options": opts, "key": "ours", "src": str(src), "dst": ""}
            ),
        )
        rows.append(row("seaweedfs", name, "upload", base, ours))
        base, ours = pair(
            i,
            lambda bucket=bucket: measure(
                {
                    "tool": "boto3",
                    "op": "download",
                    "client": client,
                    "bucket": bucket,
                    "prefix": "base",
                    "src": "",
                    "dst": str(fresh(work / "b-dl")),
                }
            ),
            lambda bucket=bucket: measure(
                {
                    "tool": "jobstore",
                    "op": "download",
                    "store": f"s3://{bucket}",
                    "options": opts,
                    "key": "ours",
                    "src": "",
                    "dst": str(fresh(work / "dl")),
                }
            ),
        )
        rows.append(row("seaweedfs", name, "download", base, ours))
        fresh(work / "b-dl")
        fresh(work / "dl")
        _empty_bucket(server.client(), bucket)
    return rows


def _warm_up(work: Path, server) -> None:
    """SeaweedFS grows its first volumes on the first writes: do that before any clock runs."""
    d = work / "warm"
    d.mkdir(exist_ok=True)
    for i in range(8):
        (d / f"w{i}").write_bytes(os.urandom(4 * MiB))
    bucket = server.make_bucket(f"warm-{os.getpid()}")
    c = server.client()
    for p in d.iterdir():
        c.upload_file(str(p), bucket, p.name)
    _empty_bucket(c, bucket)
    shutil.rmtree(d)


def _empty_bucket(c, bucket: str) -> None:
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            c.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000]})


def row(store: str, name: str, op: str, base: dict, ours: dict) -> dict:
    count, size = SETS[name]
    total = count * size / MiB
    r = {
        "store": store, "set": f"{count} x {_h(size)}", "op": op,
        "base_mib_s": total / base["seconds"], "ours_mib_s": total / ours["seconds"],
        "ratio": base["seconds"] / ours["seconds"], "ours_rss_mib": ours["rss_mib"],
        "base_rss_mib": base["rss_mib"], "base_s": base["seconds"], "ours_s": ours["seconds"],
    }  # fmt: skip
    print(f"  {store} {r['set']} {op}: base {base['seconds']:.2f}s ours {ours['seconds']:.2f}s", file=sys.stderr, flush=True)
    return r


def summary(rows: list[dict]) -> None:
    """One line per (store, set, op): medians over the repeats, worst RSS."""
    from statistics import median

    print("| store     | set             | op               | base MiB/s | ours MiB/s | ratio | ours peak RSS MiB | runs |")
    print("|-----------|-----------------|------------------|-----------:|-----------:|------:|------------------:|-----:|")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["store"], r["set"], r["op"]), []).append(r)
    for (store, name, op), rs in groups.items():
        b, o = median(r["base_s"] for r in rs), median(r["ours_s"] for r in rs)
        mib = rs[0]["base_mib_s"] * rs[0]["base_s"]
        print(
            f"| {store:<9} | {name:<15} | {op:<16} | {mib / b:10.0f} | {mib / o:10.0f} | {b / o:4.2f}x "
            f"| {max(r['ours_rss_mib'] for r in rs):17.0f} | {len(rs):4d} |"
        )


def _h(size: int) -> str:
    for unit, n in (("GiB", 1024**3), ("MiB", MiB), ("KiB", 1024)):
        if size >= n:
            return f"{size // n} {unit}"
    return f"{size} B"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child")
    ap.add_argument("--sets", default="big,medium,small")
    ap.add_argument("--stores", default="local,s3")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--dir", default=None, help="Scratch folder (default: a temp dir, removed after).")
    ap.add_argument("--json", default=None, help="Also write the rows to this file.")
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    work = Path(args.dir or tempfile.mkdtemp(prefix="jobcloud-bench-staging-"))
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free / 1024**3
    if free < 12:
        raise SystemExit(f"{work}: only {free:.1f} GiB free; the bench needs about 12 GiB")
    server = None
    rows: list[dict] = []
    try:
        stores = args.stores.split(",")
        if "s3" in stores:
            from tests.integration.seaweed import Seaweed

            server = Seaweed(work / "seaweed").start()
            _warm_up(work, server)
        for name in args.sets.split(","):
            src = make_set(work, name)
            if "local" in stores:
                rows += bench_local(work, name, src, args.repeat)
            if "s3" in stores:
                rows += bench_s3(work, name, src, args.repeat, server)
            shutil.rmtree(src)
    finally:
        if server is not None:
            server.stop()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    summary(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    print("base: cp -r (local), boto3 TransferManager (seaweedfs); ratio = base time / our time;"
          " ours records and verifies size + SHA-256 of every file")  # fmt: skip


if __name__ == "__main__":
    main()

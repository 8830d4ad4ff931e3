"""A multi-host rig on one machine: four "hosts" as Linux network namespaces, joined by a bridge.

    root namespace  the test (or you): reaches every host through the bridge's address .1
    server   .2     PostgreSQL (on the host's own 127.0.0.1) and `prefect server start` on it,
                    bound to .2; `jobcloud deploy` of a tiny catalog against it
    w1, w2   .3 .4  one JobCloud worker each (`prefect worker start --pool cpu`), its own
                    JOBCLOUD_HOME; the container engine's socket is shared (a Unix socket is a
                    file, so it works across network namespaces)
    store    .5     SeaweedFS S3: the job store of every host (s3://jobcloud-rig/jobcloud)

Each host is a namespace with `lo` up and one veth pair to the bridge; addresses only on those
links, in 10.213.N.0/24 with N free on this machine. `partition(host)` sets the host's bridge
side of its veth down (every link of that host to every other, and to the test, is cut),
`heal(host)` up again. `reboot(host)` SIGKILLs every process in the host's namespace. Containers
are the engine's, outside the namespaces: a rebooted worker host leaves its job containers to its
next worker's sweep.

Only `ip netns` / `ip link` / `ip addr` (root); no iptables. Names: `jcr<owner pid in hex>-<host>`
(the bridge `...-br`), so `cleanup_leftovers` removes what a crashed run left (its owner is gone)
and never another live rig's.

By hand (root): `python -m tests.cluster.rig up` starts a rig and keeps it until Ctrl-C;
`python -m tests.cluster.rig down` removes leftovers of rigs whose owner died. See README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobcloud.deployments.server.processes import Proc, spawn, start_worker
from tests.e2e.team_stack import CATALOG, TeamStack, checked
from tests.engine_helpers import labelled_containers
from tests.integration.seaweed import Seaweed
from tests.integration.seaweed import free_port as weed_port

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "jcr"
HOSTS = {"server": 2, "w1": 3, "w2": 4, "store": 5}  # the last byte of each host's address
SHORT = {"server": "sv", "w1": "w1", "w2": "w2", "store": "st", "bridge": "br"}
WORKERS = ("w1", "w2")
NAME_RE = re.compile(rf"^{PREFIX}([0-9a-f]+)([g-z]?)-(br|sv|w1|w2|st)$")
SUBNET = "10.213"
BUCKET = "jobcloud-rig"
API_LABEL = "io.jobcloud.api"
JOB_LABEL = "io.jobcloud.job-id"
_LIVE: set[str] = set()  # rig ids of this process that are up (never cleaned as leftovers)

# The tiny catalog of TeamStack (tiny/v1/echo) plus jobs that last a while.
RIG_CATALOG = (
    CATALOG
    + """
rig:
  v1:
    nap:
      description: Sleeps NAP_S seconds (5 by default), then writes one output file.
      app:
        cmd: ["echo start; sleep ${NAP_S:-5}; echo done > /files/output/done.txt; echo end"]
        env: [NAP_S]
      handler:
        image_url: "localhost/jobcloud/busybox:1"
        files_up: {output: output, log: log}
      aws_resources:
        hardware: {MEMORY: 64, VCPU: 1, GPU: 0}
        timeout: 300
    many:
      description: Writes FILES small files (slow to upload), then ends.
      app:
        cmd: ["cd /files/output && for i in $(seq 1 ${FILES:-300}); do echo file $i > f$i.txt; done; echo wrote"]
        env: [FILES]
      handler:
        image_url: "localhost/jobcloud/busybox:1"
        files_up: {output: output, log: log}
      aws_resources:
        hardware: {MEMORY: 64, VCPU: 1, GPU: 0}
        timeout: 300
"""
)


# -- ip(8) -------------------------------------------------------------------------------------
def ip(*args: str, check: bool = True) -> str:
    """`ip ARGS`; its stdout. Raises RuntimeError with ip's own message when it fails."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def netns_unavailable() -> str | None:
    """Why this machine cannot build the rig (None when it can): root and `ip netns` needed."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (`ip netns add`)"
    try:
        ip("netns", "list")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns` does not work here: {exc}"
    return None


def namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def links() -> list[str]:
    """Names of the root namespace's links (`veth@ifN` without the peer part)."""
    names = []
    for line in ip("-o", "link", "show").splitlines():
        parts = line.split(":", 2)
        if len(parts) > 1:
            names.append(parts[1].strip().split("@")[0])
    return names


def namespace_pids(ns: str) -> list[int]:
    try:
        return [int(p) for p in ip("netns", "pids", ns).split()]
    except RuntimeError:
        return []  # the namespace is gone


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_namespace(ns: str, timeout: float = 20) -> list[int]:
    """Kill every process in ``ns`` at once, as a power cut would: all are stopped (SIGSTOP,
    until no new one appears) before any is killed, so that none sees another die and reacts
    (a job's guard would remove its container); then SIGKILL until none is left."""
    stopped: set[int] = set()
    while new := [p for p in namespace_pids(ns) if p not in stopped]:
        _signal_all(new, signal.SIGSTOP)
        stopped.update(new)
    deadline = time.monotonic() + timeout
    while pids := namespace_pids(ns):
        _signal_all(pids, signal.SIGKILL)
        stopped.update(pids)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of namespace {ns} do not die: {pids}")
        time.sleep(0.05)
    return sorted(stopped)


def _owner_alive(rid: str) -> bool:
    if rid in _LIVE:
        return True
    pid = int(re.sub("[g-z]$", "", rid), 16)
    if pid == os.getpid():
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[-1][:1] != "Z"  # a zombie (never reaped: PID 1 may be a shell) is gone


def cleanup_leftovers(docker_host: str | None = None, everything: bool = False) -> list[str]:
    """Remove the namespaces (and their processes), links and job containers of rigs whose owner
    process is gone (all rigs with ``everything``); what was removed."""
    removed = []
    for ns in namespaces():
        m = NAME_RE.match(ns)
        if m and (everything or not _owner_alive(m[1] + m[2])):
            kill_namespace(ns)
            ip("netns", "del", ns, check=False)
            removed.append(f"namespace {ns}")
    for link in links():
        m = NAME_RE.match(link)
        if m and (everything or not _owner_alive(m[1] + m[2])):
            ip("link", "del", link, check=False)
            removed.append(f"link {link}")
    if docker_host:
        live = set(re.findall(rf"inet ({SUBNET}\.\d+)\.1/24", ip("-4", "-o", "addr", "show")))
        for c in labelled_containers(docker_host, JOB_LABEL):
            api = (c.attrs.get("Labels") or {}).get(API_LABEL, "")
            m = re.match(rf"http://({SUBNET}\.\d+)\.\d+:", api)
            if m and m[1] not in live:
                c.remove(force=True)
                removed.append(f"container {c.id[:12]}")
    return removed


def _free_subnet() -> int:
    used = ip("-4", "-o", "addr", "show") + ip("-4", "route", "show")
    free = [n for n in range(1, 255) if f"{SUBNET}.{n}." not in used]
    if not free:
        raise RuntimeError(f"no free {SUBNET}.N.0/24 subnet on this machine")
    return random.choice(free)


# -- the rig -------------------------------------------------------------------------------------
@dataclass
class Cluster:
    """Four hosts in network namespaces, JobCloud on them (see the module's docstring).

    ``limit``: the `cpu` pool's limit (`jobcloud deploy --limit`); ``zombie_after_s``: the
    deploy's JOBCLOUD_ZOMBIE_AFTER_S (None: JobCloud's default); ``prefetch_s``: how far ahead
    workers take scheduled runs (1 s, not Prefect's 10: a run due in a few seconds stays queued
    on the server until then); ``rid``: the names' id (the
    owner's pid in hex, and a letter g-z for a second rig of the same process)."""

    tmp: Path
    docker_host: str
    limit: int = 4
    zombie_after_s: int | None = None
    prefetch_s: int = 1
    rid: str = field(default_factory=lambda: f"{os.getpid():x}")
    net: int = 0
    stack: TeamStack | None = None
    seaweed: Seaweed | None = None
    workers: dict[str, Proc] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    starts: dict[str, int] = field(default_factory=dict)  # worker starts per host (log file names)
    built: bool = False
    deployed_at: float = 0.0  # time.time() when the last `jobcloud deploy` returned

    # names and addresses
    def ns(self, host: str) -> str:
        """The namespace of ``host``; also the name of its veth's bridge side."""
        return f"{PREFIX}{self.rid}-{SHORT[host]}"

    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.rid}-br"

    def ip_of(self, host: str) -> str:
        return f"{SUBNET}.{self.net}.{HOSTS[host]}"

    def prefix(self, host: str) -> list[str]:
        """What runs a command on ``host``."""
        return ["ip", "netns", "exec", self.ns(host)]

    @property
    def storage(self) -> str:
        return f"s3://{BUCKET}/jobcloud"

    @property
    def api_url(self) -> str:
        assert self.stack is not None and self.stack.server is not None
        return self.stack.server.api_url

    @property
    def env(self) -> dict[str, str]:
        """The environment of a `jobcloud` or `prefect` command in the root namespace (the
        test's): the server's API, the S3 store and its credentials, the catalog."""
        assert self.stack is not None
        return dict(self.stack.env)

    # start and stop
    def start(self) -> Cluster:
        """Build the network, start every host's processes, deploy; all or nothing: a failure
        stops what was started and removes what was built, then raises."""
        if self.rid in _LIVE:
            raise RuntimeError(f"a rig with id {self.rid} is up in this process already")
        _LIVE.add(self.rid)
        try:
            self._network()
            self._services()
        except BaseException:
            self.stop()
            raise
        return self

    def _network(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.net = _free_subnet()
        self.built = True  # from here on stop() removes whatever part exists
        br = self.bridge
        ip("link", "add", br, "type", "bridge", "forward_delay", "0")
        ip("addr", "add", f"{SUBNET}.{self.net}.1/24", "dev", br)
        ip("link", "set", br, "up")
        for host in HOSTS:
            ns, veth = self.ns(host), self.ns(host)
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip("link", "add", veth, "type", "veth", "peer", "name", veth + "p")
            ip("link", "set", veth + "p", "netns", ns)
            ip("-n", ns, "link", "set", veth + "p", "name", "eth0")
            ip("-n", ns, "addr", "add", f"{self.ip_of(host)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("link", "set", veth, "master", br)
            ip("link", "set", veth, "up")

    def _services(self) -> None:
        self.seaweed = Seaweed(self.tmp / "store", host=self.ip_of("store"), prefix=self.prefix("store"))
        self.seaweed.ports = {n: weed_port() for n in ("master", "volume", "filer", "s3")}
        store_error: list[BaseException] = []

        def start_store() -> None:
            try:
                assert self.seaweed is not None
                self.seaweed.start(timeout=90)
                self.seaweed.make_bucket(BUCKET)
            except BaseException as exc:  # noqa: BLE001 - raised in the main thread below
                store_error.append(exc)

        store = threading.Thread(target=start_store, daemon=True)
        store.start()  # at the same time as PostgreSQL and the Prefect server
        extra = self.seaweed.env()
        if self.zombie_after_s is not None:
            extra["JOBCLOUD_ZOMBIE_AFTER_S"] = str(self.zombie_after_s)
        self.stack = TeamStack(
            tmp=self.tmp / "server",
            docker_host=self.docker_host,
            limit=self.limit,
            host=self.ip_of("server"),
            prefix=self.prefix("server"),
            storage=self.storage,
            extra_env=extra,
            catalog=RIG_CATALOG,
        )
        try:
            self.stack.start()  # PostgreSQL, Prefect server, `jobcloud deploy` (which never touches the store)
            self.deployed_at = time.time()
        finally:
            store.join()
        if store_error:
            raise store_error[0]
        for host in WORKERS:
            self.start_worker(host, wait=False)
        for host in WORKERS:
            self.wait_worker(host)

    def stop(self) -> list[str]:
        """Kill every process of every host, remove the rig's job containers, the namespaces,
        the veths and the bridge; also after a failed or partial start. What could not be
        removed (also checked by `remains`)."""
        problems: list[str] = []
        if self.built:
            for host in HOSTS:
                try:
                    kill_namespace(self.ns(host))
                except RuntimeError as exc:
                    problems.append(str(exc))
        for proc in [*self.procs, *self.workers.values()]:
            proc.stop(timeout=2)  # dead already: only reaped here
        self.procs, self.workers = [], {}
        if self.stack is not None:
            self.stack.stop()  # its processes are dead: reaps them, deletes PostgreSQL's folder
        if self.seaweed is not None:
            self.seaweed.stop()
        if self.stack is not None and self.stack.server is not None:
            try:
                for c in labelled_containers(self.docker_host, f"{API_LABEL}={self.api_url}"):
                    c.remove(force=True)
            except Exception as exc:  # noqa: BLE001 - report, go on removing the network
                problems.append(f"job containers: {exc}")
        if self.built:
            for host in HOSTS:
                ip("link", "del", self.ns(host), check=False)  # deletes both ends of the pair
                ip("netns", "del", self.ns(host), check=False)
            ip("link", "del", self.bridge, check=False)
            self.built = False
        _LIVE.discard(self.rid)
        return problems + self.remains()

    def remains(self) -> list[str]:
        """This rig's namespaces, links and processes that still exist."""
        mine = re.compile(rf"^{PREFIX}{self.rid}-")
        left = [f"namespace {n} (pids {namespace_pids(n)})" for n in namespaces() if mine.match(n)]
        left += [f"link {n}" for n in links() if mine.match(n)]
        return left

    # processes on hosts
    def exec(self, host: str, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> Proc:
        """Start ``argv`` on ``host`` (in its own session); the rig stops it at the latest in `stop`."""
        log = log or self.tmp / host / f"exec-{time.monotonic_ns()}.log"
        proc = spawn(argv, env if env is not None else dict(os.environ), log, prefix=self.prefix(host))
        self.procs.append(proc)
        return proc

    def start_worker(self, host: str, wait: bool = True, **settings: str) -> Proc:
        """A JobCloud worker (`prefect worker start --pool cpu --name HOST`) on ``host``, with
        that host's own JOBCLOUD_HOME and ``settings`` (which its runs inherit); waits until it
        says it started."""
        assert self.stack is not None and self.stack.server is not None
        n = self.starts.get(host, 0) + 1
        self.starts[host] = n
        env = {**self.stack.env, "JOBCLOUD_HOME": str(self.home(host)), "JOBCLOUD_HOST_NAME": host, **settings}
        log = self.tmp / host / f"worker-{n}.log"
        extra = ["--prefetch-seconds", str(self.prefetch_s)]
        proc = start_worker(self.stack.server, "cpu", env, log, name=host, extra_args=extra, prefix=self.prefix(host))
        self.workers[host] = proc
        if wait:
            self.wait_worker(host)
        return proc

    def wait_worker(self, host: str, timeout: float = 90) -> None:
        proc = self.workers[host]
        deadline = time.monotonic() + timeout
        while "started!" not in proc.tail(200):
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"worker on {host} did not start:\n{proc.tail()}")
            time.sleep(0.2)

    def home(self, host: str) -> Path:
        """JOBCLOUD_HOME of a worker host."""
        return self.tmp / host / "jc-home"

    # faults
    def partition(self, host: str) -> None:
        """Cut every link between ``host`` and every other host (and the test)."""
        ip("link", "set", self.ns(host), "down")

    def heal(self, host: str) -> None:
        ip("link", "set", self.ns(host), "up")

    def reboot(self, host: str) -> list[int]:
        """SIGKILL every process on ``host`` (nothing of it can say goodbye); the pids killed.
        Start its worker again with `start_worker`."""
        killed = kill_namespace(self.ns(host))
        if host in self.workers:
            self.workers.pop(host).stop(timeout=2)  # reaped
        return killed

    def restart_server(self, down_s: float = 0, hard: bool = False, timeout: float = 180) -> tuple[float, float]:
        """Stop the Prefect server (SIGTERM, or SIGKILL with ``hard``), keep it down ``down_s``
        from the stop's start at least, and start it again on the same database, address and
        port; (monotonic time the stop began, time it answered again)."""
        assert self.stack is not None and self.stack.server is not None
        server = self.stack.server
        t0 = time.monotonic()
        if hard and server.proc is not None and server.proc.alive():
            os.killpg(server.proc.popen.pid, signal.SIGKILL)
        server.stop()
        time.sleep(max(0.0, t0 + down_s - time.monotonic()))
        server.start(timeout=timeout)
        return t0, time.monotonic()

    def restart_postgres(self, down_s: float = 0) -> tuple[float, float]:
        """Fast shutdown of PostgreSQL, down ``down_s`` at least, then a start on the same data;
        (monotonic time the stop began, time it accepted connections again)."""
        assert self.stack is not None and self.stack.postgres is not None
        t0 = time.monotonic()
        self.stack.postgres.restart(down_s=down_s)
        return t0, time.monotonic()

    def deploy(self, **env: str) -> str:
        """`jobcloud deploy` again, with settings ``env`` (e.g. JOBCLOUD_ZOMBIE_AFTER_S)."""
        assert self.stack is not None
        out = checked(
            [*_jobcloud(), "deploy", "--limit", f"cpu={self.limit}", "--prefect-yaml", str(self.tmp / "none.yaml")],
            {**self.stack.env, **env},
            self.stack.tmp,
            300,
        )
        self.deployed_at = time.time()
        return out

    # what happened
    def cli(self, *args: str, timeout: float = 300) -> str:
        """`jobcloud ARGS` in the root namespace against the rig; stdout (raises on an error)."""
        assert self.stack is not None
        return self.stack.cli(*args, timeout=timeout)

    def submit(self, entry: str, *args: str) -> str:
        """`jobcloud run ENTRY ARGS --no-wait --json`: the job's id."""
        return json.loads(self.cli("run", entry, *args, "--no-wait", "--json"))["id"]

    def hosts_of(self, job_id: str) -> list[str]:
        """The worker hosts that took the job, once per time (from the workers' logs: their
        submissions but those the server turned down, when another worker had it already, and
        those the worker left because the run had ended since it was polled: a host cut off
        between asking for work and submitting it)."""
        found = []
        for host in WORKERS:
            for log in sorted((self.tmp / host).glob("worker-*.log")):
                text = log.read_text(errors="replace")
                taken = (
                    text.count(f"submitting flow run '{job_id}'")
                    - text.count(f"Aborted submission of flow run '{job_id}'")
                    - text.count(f"flow run {job_id} ended (")
                )
                found += [host] * taken
        return found

    def s3(self) -> Any:
        assert self.seaweed is not None
        return self.seaweed.client()

    def objects(self, prefix: str) -> dict[str, int]:
        """Key (below the store's root) -> size of every object under ``prefix`` of the store."""
        c, found, token = self.s3(), {}, None
        while True:
            kw = {"Bucket": BUCKET, "Prefix": f"jobcloud/{prefix}"}
            if token:
                kw["ContinuationToken"] = token
            page = c.list_objects_v2(**kw)
            for o in page.get("Contents", []):
                found[o["Key"][len("jobcloud/") :]] = o["Size"]
            if not page.get("IsTruncated"):
                return found
            token = page["NextContinuationToken"]

    def manifest(self, job_id: str) -> dict[str, Any] | None:
        try:
            body = self.s3().get_object(Bucket=BUCKET, Key=f"jobcloud/jobs/{job_id}/manifest.json")["Body"].read()
        except Exception:  # noqa: BLE001 - none (yet)
            return None
        return json.loads(body)

    def job_containers(self, job_id: str | None = None) -> list[Any]:
        """The engine's containers of this rig's jobs (of one job, or all)."""
        label = f"{JOB_LABEL}={job_id}" if job_id else f"{API_LABEL}={self.api_url}"
        return labelled_containers(self.docker_host, label)

    def host_of_container(self, container: Any) -> str | None:
        """The worker host whose job made ``container``: its `io.jobcloud.host` label (each
        worker host runs with JOBCLOUD_HOST_NAME=<host>)."""
        from jobcloud.flows.container_spec import HOST_LABEL

        return (container.attrs.get("Labels") or {}).get(HOST_LABEL)

    def logs(self, n: int = 30) -> str:
        """The tails of every host's logs, for a failing assertion."""
        parts = []
        for log in sorted(self.tmp.rglob("*.log")):
            try:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-n:])
            except OSError:
                continue
            parts.append(f"--- {log.relative_to(self.tmp)}\n{tail}")
        return "\n".join(parts)

    def describe(self) -> str:
        lines = [f"bridge {self.bridge} {SUBNET}.{self.net}.1/24 (this namespace)"]
        lines += [f"{h:6} {self.ip_of(h):15} ip netns exec {self.ns(h)} ..." for h in HOSTS]
        if self.stack is not None and self.stack.server is not None:
            lines.append(f"Prefect API {self.api_url} (UI: {self.api_url[:-4]})")
        if self.seaweed is not None and self.seaweed.ports:
            lines.append(f"S3 {self.seaweed.endpoint}, job store {self.storage}")
        lines.append(f"logs under {self.tmp}")
        return "\n".join(lines)


def _jobcloud() -> list[str]:
    return [sys.executable, "-m", "jobcloud.deployments.cli"]


# -- by hand ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.rig", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a rig; keep it until Ctrl-C (or SIGTERM), then remove it")
    up.add_argument("--dir", type=Path, help="where logs and data go (default: a new temporary folder)")
    up.add_argument("--zombie-after", type=int, help="JOBCLOUD_ZOMBIE_AFTER_S of the deploy")
    down = sub.add_parser("down", help="remove leftovers of rigs whose owner process is gone")
    down.add_argument("--all", action="store_true", help="also of rigs whose owner still runs")
    args = parser.parse_args(argv)
    reason = netns_unavailable()
    if reason:
        print(f"cannot: {reason}", file=sys.stderr)
        return 2
    engine = subprocess.run([str(ROOT / "scripts/engine.sh")], capture_output=True, text=True, check=True).stdout.split()[-1]
    if args.cmd == "down":
        for what in cleanup_leftovers(engine, everything=args.all):
            print(f"removed {what}")
        return 0
    from jobcloud.deployments.imaging.build import build

    build(["busybox"], log=lambda m: None)
    for what in cleanup_leftovers(engine):
        print(f"removed leftover {what}")
    rig = Cluster(tmp=args.dir or Path(tempfile.mkdtemp(prefix="jobcloud-rig-")), docker_host=engine, zombie_after_s=args.zombie_after)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        rig.start()
        print(rig.describe())
        print("# in another shell:")
        for k in (
            "PREFECT_API_URL",
            "JOBCLOUD_STORAGE",
            "JOBCLOUD_CONFIG",
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ):
            print(f"export {k}={rig.env[k]}")
        print("# jobcloud run tiny/v1/echo --no-wait    (Ctrl-C here stops the rig)", flush=True)
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        left = rig.stop()
        print("stopped" + (f"; left: {left}" if left else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

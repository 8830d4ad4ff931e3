"""Warm starts of flow runs: a fork server with Prefect and JobCloud already imported.

A process worker starts every flow run as `python -m prefect.engine`, a new interpreter that
spends most of its first seconds importing Prefect, the Docker SDK and the job store (about
2-3 s here, far more on a busy host). The JobCloud worker (`jobcloud.deployments.worker.fast_worker`) starts
one fork server beside itself instead: a process that imports all of that once and waits on a
Unix socket. Each flow run's command is then `python -m jobcloud.deployments.worker.warm_start`, a small
client that hands its environment, working folder, stdin/stdout/stderr and arguments to the
server; the server forks a child that runs `prefect.engine` exactly as the stock command would,
and the client relays signals to it and exits with its exit code. So the worker sees an
ordinary child process (cancellation, exit codes, logs all unchanged).

If `JOBCLOUD_WARM_SOCKET` is unset or nobody answers there, the client simply becomes
`python -m prefect.engine` (exec), so a run never depends on the fork server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

# Imports inside functions: the client side of this module is every flow run's command and
# must start in milliseconds; only the fork server and its children import more.

# The settings model's `warm_socket` (env_name("warm_socket")), named here as text: the client
# must not import pydantic. tests/unit/test_settings.py checks that the two agree.
SOCKET_ENV = "JOBCLOUD_WARM_SOCKET"
RUN_ID_ENV = "PREFECT__FLOW_RUN_ID"  # set by Prefect's worker in each flow run's environment
FOLDER_PREFIX = "jobcloud-warm-"  # the worker's temporary folder for the socket
PR_SET_PDEATHSIG = 1
HEADER = struct.Struct("!I")
MAX_REQUEST = 4 * 1024 * 1024
# Imported once by the server; each forked run starts with them in memory.
PRELOAD = (
    "prefect",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.deployments.steps",
    "prefect.artifacts",
    "docker",
    "jobcloud.flows.job",
    "jobcloud.flows.catalog_flows",
    "jobcloud.blocks.store.job_store",
    "jobcloud.blocks.store.store_block",
)


# -- client (runs as the flow run's command; must stay light: no Prefect import) ----------
def _exec_engine(argv: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *argv])


def _recv_line(conn: socket.socket, buf: bytearray) -> str | None:
    while b"\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode()


def client_main(argv: list[str]) -> int:
    """Run the flow run through the fork server, or exec the stock engine if there is none."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        _exec_engine(argv)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        _exec_engine(argv)
    payload = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": argv}).encode()
    socket.send_fds(conn, [HEADER.pack(len(payload)) + payload], [0, 1, 2])
    buf = bytearray()
    first = _recv_line(conn, buf)
    if not first or not first.startswith("pid "):
        # The server could not fork: run the stock way rather than fail the run.
        conn.close()
        _exec_engine(argv)
    pid = int(first[4:])

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, forward)
    while True:
        try:
            line = _recv_line(conn, buf)
        except InterruptedError:
            continue
        if line is None:
            return 1  # the server went away; its child was stopped with it
        if line.startswith("exit "):
            return int(line[5:])


# -- server ---------------------------------------------------------------------------------
def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 65536, 3)
    buf = bytearray(data)
    while len(buf) < HEADER.size:
        more = conn.recv(65536)
        if not more:
            raise ConnectionError("short request")
        buf += more
    (size,) = HEADER.unpack_from(buf)
    if size > MAX_REQUEST:
        raise ConnectionError("request too large")
    while len(buf) < HEADER.size + size:
        more = conn.recv(65536)
        if not more:
            raise ConnectionError("short request")
        buf += more
    return json.loads(bytes(buf[HEADER.size : HEADER.size + size])), list(fds)


class ForkedRun:
    """What a forked child of the fork server runs: one flow run, as `python -m MODULE` would.

    `serve` returns one of these in the child only, out of all of its own frames (so none of the
    server's clean-up runs in the child); the module's `__main__` then calls `run` and exits
    through `sys.exit`, a normal interpreter exit: Prefect drains its log and event workers to
    the API in its `atexit` handlers, as it does after a cold start."""

    def __init__(self, request: dict, fds: list[int], module: str) -> None:
        self.request, self.fds, self.module = request, fds, module

    def run(self) -> int:
        """Become the flow run's process and run the module; its exit code."""
        import runpy
        import traceback

        try:
            os.setsid()  # its own process group: stopping it stops what it starts
            for target, fd in enumerate(self.fds[:3]):
                os.dup2(fd, target)
            for fd in self.fds:
                if fd > 2:
                    os.close(fd)
            os.chdir(self.request["cwd"])
            os.environ.clear()
            os.environ.update(self.request["env"])
            import prefect.context

            # Settings as this run's environment gives them, not as the server's did. Prefect has
            # no public call for this (prefect.context's own; tests/unit/test_prefect_surface.py).
            prefect.context.refresh_global_settings_context()
            sys.argv = [self.module, *self.request["argv"]]
            try:
                runpy.run_module(self.module, run_name="__main__", alter_sys=True)
            except SystemExit as exc:
                return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            return 0
        except BaseException:  # noqa: BLE001 - report anything, then exit with 1
            traceback.print_exc()
            return 1


def _die_with_parent() -> int:
    """Ask the kernel for SIGTERM when the worker that started us dies; its pid now.

    Linux's parent-death signal; elsewhere (or if it fails) the serve loop's check of the
    parent pid, once a second, does the same job.
    """
    parent = os.getppid()
    _signal_on_parent_death(signal.SIGTERM)
    return parent


def _signal_on_parent_death(sig: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
        except (OSError, AttributeError):
            pass


def serve(path: str, module: str = "prefect.engine") -> ForkedRun | None:
    """Preload, then fork one child per request on the Unix socket ``path``, until SIGTERM or
    until the process that started it (the worker) is gone.

    On the way out it stops every run it started: SIGTERM to each run's process group, SIGKILL
    after `run_stop_grace_s()`, and it removes the socket's folder; then it returns None. In each
    forked child it returns the `ForkedRun` to run instead (``module`` as `python -m` would run
    it; another module only in tests). It leaves a line per run in its log (stderr):
    `warm_start: flow run <id> forked as pid <pid>`, the mark that a run started warm."""
    import importlib
    import selectors

    parent = _die_with_parent()
    if os.getppid() != parent:  # the worker died before the signal was armed
        return None
    me = os.getpid()

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a missing extra only loses its head start
            print(f"warm_start: not preloaded {name}: {exc}", file=sys.stderr)
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # only this user may start runs through it
    try:
        srv.bind(path)
    finally:
        os.umask(old_umask)
    srv.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "signal")
    children: dict[int, socket.socket] = {}  # pid -> client connection
    print(f"warm_start: ready on {path}", file=sys.stderr, flush=True)
    try:
        while not stopping:
            for key, _ in sel.select(timeout=1.0):
                if os.getppid() != parent:
                    stopping = True  # never start a run for a worker that is gone
                    break
                if key.data == "accept":
                    conn, _ = srv.accept()
                    try:
                        request, fds = _read_request(conn)
                    except (OSError, ValueError, ConnectionError):
                        conn.close()
                        continue
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                    if pid == 0:
                        # Even a SIGKILLed fork server takes its runs with it.
                        _signal_on_parent_death(signal.SIGTERM)
                        signal.set_wakeup_fd(-1)
                        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                            signal.signal(sig, signal.SIG_DFL)
                        sel.close()
                        srv.close()
                        conn.close()
                        for c in children.values():
                            c.close()
                        for fd in (wake_r, wake_w):
                            os.close(fd)
                        return ForkedRun(request, fds, module)  # the `finally` below skips the child
                    for fd in fds:
                        os.close(fd)
                    children[pid] = conn
                    run_id = request.get("env", {}).get(RUN_ID_ENV, "?")
                    print(f"warm_start: flow run {run_id} forked as pid {pid}", file=sys.stderr, flush=True)
                    conn.sendall(f"pid {pid}\n".encode())
                    sel.register(conn, selectors.EVENT_READ, pid)
                elif key.data == "signal":
                    os.read(wake_r, 512)
                else:
                    # The client closed its end: it was killed; stop its run too.
                    pid = key.data
                    try:
                        if not key.fileobj.recv(1):
                            sel.unregister(key.fileobj)
                            _kill_group(pid, signal.SIGTERM)
                    except OSError:
                        pass
            _reap(children, sel)
            if os.getppid() != parent:
                stopping = True
    finally:
        if os.getpid() == me:  # the server, not a child on its way to its run
            _shut_down(path, srv, children, sel)
    return None


def _shut_down(path: str, srv: socket.socket, children: dict[int, socket.socket], sel: object) -> None:
    """The fork server's way out: the socket, every run it started, its temporary folder."""
    srv.close()
    if os.path.exists(path):
        os.unlink(path)
    _stop_children(children, sel)
    folder = os.path.dirname(path)
    if os.path.basename(folder).startswith(FOLDER_PREFIX):
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def run_stop_grace_s() -> float:
    """How long a run gets to end after SIGTERM when the fork server stops, then SIGKILL
    (JOBCLOUD_RUN_STOP_GRACE_S). Settings that cannot be read give the default: the fork
    server's way out must not fail."""
    from jobcloud.blocks.errors import UserError
    from jobcloud.blocks.settings import JobCloudSettings, get_settings

    try:
        return get_settings().run_stop_grace_s
    except UserError:
        return float(JobCloudSettings.model_fields["run_stop_grace_s"].default)


def _stop_children(children: dict[int, socket.socket], sel: object) -> None:
    """SIGTERM every run's process group; SIGKILL the groups still there after the grace."""
    import time

    for pid in list(children):
        _kill_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + run_stop_grace_s()
    while children and time.monotonic() < deadline:
        _reap(children, sel)
        time.sleep(0.1)
    for pid in list(children):
        _kill_group(pid, signal.SIGKILL)
    end = time.monotonic() + 5
    while children and time.monotonic() < end:
        _reap(children, sel)
        time.sleep(0.05)


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(children: dict[int, socket.socket], sel: object) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        code = os.waitstatus_to_exitcode(status)
        code = code if code >= 0 else 128 - code  # killed by a signal: 128 + signal, like a shell
        try:
            sel.unregister(conn)  # type: ignore[attr-defined]
        except (KeyError, ValueError):
            pass
        try:
            conn.sendall(f"exit {code}\n".encode())
        except OSError:
            pass
        conn.close()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--serve":
        forked = serve(sys.argv[2], *sys.argv[3:4])
        if forked is not None:
            sys.exit(forked.run())  # a forked child: exits as the flow run would
    else:
        sys.exit(client_main(sys.argv[1:]))

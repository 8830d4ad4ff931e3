"""Whether the image a GPU job runs can use CUDA: the GPU part of `jobcloud check`.

A GPU entrypoint (hardware.GPU > 0), or any entrypoint that names a `handler.gpu_image_url`,
runs `image_for(entry, gpus)` when it gets GPUs. That image is CUDA-capable when, in this order:
1. it says so with the label `io.jobcloud.cuda` (a CUDA version; `none`, `0`, `false` or empty
   say it is not): how images that are not PyTorch declare themselves;
2. else its PyTorch says so: `torch.version.cuda` in a throwaway container with no network
   (a CPU-only build answers None): a label or a variable can lie about a wheel, torch cannot;
3. else (no Python or no torch in it) its environment names CUDA (`CUDA_VERSION`,
   `NVIDIA_REQUIRE_CUDA`, `NVIDIA_VISIBLE_DEVICES`, as NVIDIA's base images set them).
An answer is kept per image id (in this process and in `<home>/cuda-images.json`): an id names
fixed content, so it never goes stale, and importing torch costs seconds. An image that is not
on this engine, or no engine at all, gets a note that it cannot be told here (the GPU hosts may
well have it); only an image found not CUDA-capable gets a warning. A catalog without GPU
entrypoints never touches the engine.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import docker.errors
from pydantic import BaseModel

from jobcloud.deployments.pools.in_container import PROBE_TIMEOUT_S, run_throwaway
from jobcloud.flows.catalog import Catalog
from jobcloud.flows.container_spec import image_for

CUDA_LABEL = "io.jobcloud.cuda"
NOT_CUDA_VALUES = frozenset({"", "0", "none", "false", "no", "cpu"})
CUDA_ENV = ("CUDA_VERSION", "NVIDIA_REQUIRE_CUDA", "NVIDIA_VISIBLE_DEVICES")
CACHE_NAME = "cuda-images.json"
PROBE_MARK = "JOBCLOUD-CUDA "
# Python in the image, whichever name it has; the answer is one marked JSON line (torch may
# print warnings around it). No Python at all: the marked line says so.
_PROBE_SH = (
    'for py in python3 python; do if command -v "$py" >/dev/null 2>&1; then exec "$py" -c "$1"; fi; done; '
    f"echo '{PROBE_MARK}{{\"python\": false}}'"
)
_PROBE_PY = (
    "import json\n"
    "try:\n"
    "    import torch\n"
    "except Exception as exc:\n"
    f"    print({PROBE_MARK!r} + json.dumps({{'python': True, 'torch': None, 'error': type(exc).__name__}}))\n"
    "else:\n"
    f"    print({PROBE_MARK!r} + json.dumps({{'python': True, 'torch': torch.__version__, 'cuda': torch.version.cuda}}))\n"
)


class CudaVerdict(BaseModel):
    """Whether an image can use CUDA (None: cannot tell), and how that is known."""

    capable: bool | None
    how: str


_lock = threading.Lock()
_known: dict[str, CudaVerdict] = {}  # image id -> verdict, this process


def gpu_image_uses(catalog: Catalog) -> dict[str, list[str]]:
    """image -> "app/version/entrypoint (why)" of each entrypoint whose jobs may get GPUs: the
    image such a job runs (`gpu_image_url`, else `image_url`), in catalog order."""
    uses: dict[str, list[str]] = {}
    for ref, entry in catalog.entries():
        gpus = entry.hardware.limits.GPU
        if gpus <= 0 and not entry.handler.gpu_image_url:
            continue
        why = "gpu_image_url" if entry.handler.gpu_image_url else f"GPU: {gpus}"
        uses.setdefault(image_for(entry, max(gpus, 1)), []).append(f"{ref} ({why})")
    return uses


def verdict_from_label(labels: dict[str, str] | None) -> CudaVerdict | None:
    """The image's own word (`io.jobcloud.cuda`), if it has one."""
    if not labels or CUDA_LABEL not in labels:
        return None
    value = str(labels[CUDA_LABEL]).strip()
    capable = value.lower() not in NOT_CUDA_VALUES
    return CudaVerdict(capable=capable, how=f"label {CUDA_LABEL}={value or '(empty)'}")


def verdict_from_probe(code: int, output: str, env: list[str] | None) -> CudaVerdict:
    """What the probe's exit ``code`` and ``output`` say, with the image's ``env`` (KEY=VALUE
    strings) as the fallback when it has no torch to ask (pure; for tests too)."""
    answer: dict[str, Any] | None = None
    for line in output.splitlines():
        if line.startswith(PROBE_MARK):
            try:
                answer = json.loads(line[len(PROBE_MARK) :])
            except ValueError:
                answer = None
    if answer is None and code != 127:
        tail = " | ".join(line for line in output.strip().splitlines()[-3:] if line.strip())
        return CudaVerdict(capable=None, how=f"the probe failed (exit {code}): {tail or 'no output'}")
    if answer and answer.get("torch"):
        if answer.get("cuda"):
            return CudaVerdict(capable=True, how=f"PyTorch {answer['torch']} built for CUDA {answer['cuda']}")
        return CudaVerdict(capable=False, how=f"its PyTorch {answer['torch']} is a CPU-only build")
    names = {item.partition("=")[0]: item.partition("=")[2] for item in env or []}
    for name in CUDA_ENV:
        if names.get(name):
            return CudaVerdict(capable=True, how=f"no PyTorch to ask; its environment sets {name}={names[name]}")
    what = "no /bin/sh" if code == 127 else "no Python" if answer and not answer.get("python") else "no PyTorch"
    return CudaVerdict(
        capable=False,
        how=f"{what}, no {'/'.join(CUDA_ENV)} in its environment and no {CUDA_LABEL} label",
    )


def _cache_path() -> Path:
    from jobcloud.blocks.settings import get_settings

    return get_settings().home / CACHE_NAME


def _read_cache(path: Path) -> dict[str, Any]:
    # Anything unreadable counts as empty: the image is simply probed again.
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(image_id: str, verdict: CudaVerdict) -> None:
    """Add one answer to the cache file (temp file + os.replace; an unwritable home only costs
    a probe later)."""
    path = _cache_path()
    data = _read_cache(path)
    data[image_id] = verdict.model_dump()
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


def _remembered(image_id: str) -> CudaVerdict | None:
    with _lock:
        if image_id in _known:
            return _known[image_id]
    entry = _read_cache(_cache_path()).get(image_id)
    try:
        verdict = CudaVerdict.model_validate(entry) if isinstance(entry, dict) else None
    except ValueError:
        return None
    if verdict is not None and verdict.capable is not None:
        with _lock:
            _known[image_id] = verdict
        return verdict
    return None


def cuda_verdict(client: Any, image: str) -> CudaVerdict:
    """Whether ``image`` (present on ``client``'s engine) is CUDA-capable; see the module's
    docstring for how. Raises docker.errors.ImageNotFound when the image is not there."""
    found = client.images.get(image)
    attrs = found.attrs or {}
    config = attrs.get("Config") or {}
    by_label = verdict_from_label(config.get("Labels") or found.labels)
    if by_label is not None:
        return by_label
    image_id = str(found.id)
    known = _remembered(image_id)
    if known is not None:
        return known
    code, output = run_throwaway(client, image, ["/bin/sh", "-c", _PROBE_SH, "jobcloud-cuda-probe", _PROBE_PY])
    verdict = verdict_from_probe(code, output, config.get("Env"))
    if verdict.capable is not None:  # a failed probe is asked again next time
        with _lock:
            _known[image_id] = verdict
        _remember(image_id, verdict)
    return verdict


def gpu_image_findings(catalog: Catalog, client: Any = None) -> list[tuple[str, str]]:
    """("warning" | "note", text) for each image of `gpu_image_uses` that is not CUDA-capable
    (a warning) or cannot be told here (a note: no engine, not on this engine, a failed probe)."""
    uses = gpu_image_uses(catalog)
    if not uses:
        return []
    if client is None:
        from jobcloud.blocks.engine import docker_client

        try:
            client = docker_client(timeout=PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - no engine here: the catalog is still valid
            verb = "is" if len(uses) == 1 else "are"
            text = f"no container engine answers here ({exc.__class__.__name__}); cannot tell whether {', '.join(uses)} {verb} CUDA-capable"
            return [("note", text)]
    findings: list[tuple[str, str]] = []
    for image, entrypoints in uses.items():
        used_by = "; ".join(entrypoints)
        try:
            verdict = cuda_verdict(client, image)
        except docker.errors.ImageNotFound:
            findings.append(("note", f"{image} (for {used_by}) is not present here; cannot tell whether it is CUDA-capable"))
            continue
        if verdict.capable is None:
            findings.append(("note", f"cannot tell whether {image} (for {used_by}) is CUDA-capable: {verdict.how}"))
        elif not verdict.capable:
            text = (
                f"{image}, what {used_by} run when a job gets GPUs, is not CUDA-capable ({verdict.how}): "
                "such a job would hold GPUs it cannot use. Name a CUDA build in handler.gpu_image_url "
                f"(or label a CUDA image {CUDA_LABEL}=<version>)"
            )
            findings.append(("warning", text))
    return findings


def report_gpu_images(catalog: Catalog, console: Any) -> None:
    """Print `gpu_image_findings` on ``console`` (a rich Console: `jobcloud check`'s stderr)."""
    for level, text in gpu_image_findings(catalog):
        console.print("[yellow]warning:[/] " if level == "warning" else "note: ", end="")
        console.print(text, markup=False, highlight=False)

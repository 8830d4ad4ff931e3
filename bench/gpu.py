"""The reference workload's training step on the CPU and the GPU, side by side.

The workload is torchfit's `frames` kind (images/torchfit/torchfit/frames.py: a convolutional
spot localiser on synthetic microscopy frames), sized by images/torchfit/sample/frames-bench.yaml
(64x64 frames, six conv layers of 48-96 channels, batch 128). Each mode runs in its own
process with a hard time limit, and times whole training steps (forward, loss, backward, Adam)
on data already on the device, reading the clock only between chunks of steps:

    cpu-fp32            every core this process may use (torch threads = cores)
    cuda-fp32           fp32 weights and activations (cuDNN may use TF32, PyTorch's default)
    cuda-bf16           bf16 autocast
    cuda-bf16-compile   bf16 autocast and torch.compile (a failed compile is reported, and
                        the mode is then timed eagerly)

Prints ms/step, frames/s and the speed-up over the CPU; writes the same as JSON. Needs only
Python and torch (PyYAML and rich when present): it runs on a bare GPU machine from the
repository root. Without CUDA only the CPU mode runs.

    python bench/gpu.py [--quick] [--budget 160] [--json bench/results/gpu.json] [--table FILE]

--quick uses the small sample config (images/torchfit/sample/frames.yaml) and short windows:
a check that the bench works on a CPU-only machine, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "images" / "torchfit"))
BENCH_CONFIG = ROOT / "images" / "torchfit" / "sample" / "frames-bench.yaml"
QUICK_CONFIG = ROOT / "images" / "torchfit" / "sample" / "frames.yaml"

# mode: (device, precision, compile, hard limit of its process in s, timed window in s, most steps)
MODES: dict[str, tuple[str, str, bool, float, float, int]] = {
    "cpu-fp32": ("cpu", "fp32", False, 50, 15, 25),
    "cuda-fp32": ("cuda", "fp32", False, 30, 5, 2000),
    "cuda-bf16": ("cuda", "bf16", False, 30, 5, 2000),
    "cuda-bf16-compile": ("cuda", "bf16", True, 110, 5, 2000),
}
QUICK_WINDOW_S = 2.0


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# -- one mode, in its own process ----------------------------------------------------------


def run_mode(mode: str, config_path: Path, window: float, max_steps: int) -> dict[str, Any]:
    import torch
    from torchfit import frames
    from torchfit.data import load_config

    dev, precision, compile_, _, _, _ = MODES[mode]
    if dev == "cpu":
        torch.set_num_threads(cores())
    device = torch.device(dev)
    config = load_config(str(config_path))
    batch = int(config["batch_size"])
    trainer = frames.Trainer(config, device, compile=compile_, precision=precision)
    data = frames.make_frames(4 * batch, config, int(config["seed"]), device)
    batches = [
        (trainer.to_device(data["frames"][i * batch : (i + 1) * batch]), trainer.to_device(data["target"][i * batch : (i + 1) * batch]))
        for i in range(4)
    ]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    t0 = time.perf_counter()
    first_loss = float(trainer.step(*batches[0]))
    first_step_s = time.perf_counter() - t0
    warm = 1 if dev == "cpu" else 10
    for i in range(warm):
        trainer.step(*batches[(i + 1) % 4])
    sync()
    chunk = 1 if dev == "cpu" else 25
    steps, total = 0, torch.zeros((), device=device)
    t0, c0 = time.perf_counter(), time.process_time()
    while True:
        for _ in range(chunk):
            total += trainer.step(*batches[steps % 4])
            steps += 1
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= window or steps >= max_steps:
            break
    ms = 1000 * elapsed / steps
    cpu_ms = 1000 * (time.process_time() - c0) / steps  # CPU time of this process: on a shared
    # machine the wall clock stretches, this does not (much)
    return {
        "mode": mode,
        "device": dev,
        "precision": trainer.precision,
        "compiled": trainer.compiled,
        "compile_error": trainer.compile_error,
        "threads": torch.get_num_threads() if dev == "cpu" else None,
        "first_step_s": round(first_step_s, 3),
        "steps": steps,
        "seconds": round(elapsed, 3),
        "ms_per_step": round(ms, 3),
        "cpu_ms_per_step": round(cpu_ms, 1),
        "frames_per_s": round(batch * 1000 / ms, 1),
        "loss_first": round(first_loss, 5),
        "loss_mean_timed": round(float(total) / steps, 5),
    }


# -- the parent: every mode under a time budget ---------------------------------------------


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_cores": cores(),
        "torch_threads_default": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_bf16"] = torch.cuda.is_bf16_supported()
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return env


def measure(modes: list[str], config: Path, budget: float, quick: bool, say: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + budget
    results = []
    for mode in modes:
        _, _, _, limit, window, max_steps = MODES[mode]
        if quick:
            window = QUICK_WINDOW_S
        left = deadline - time.monotonic()
        limit = min(limit, left)
        if limit < 10:
            results.append({"mode": mode, "error": f"skipped: the budget of {budget:.0f} s is spent"})
            continue
        window = min(window, max(1.0, limit / 3))
        say(f"{mode}: up to {limit:.0f} s (timed window {window:.0f} s) ...")
        cmd = [sys.executable, __file__, "--child", mode, "--config", str(config), "--window", str(window), "--max-steps", str(max_steps)]
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            results.append({"mode": mode, "error": f"timed out after {limit:.0f} s"})
            say(f"{mode}: timed out after {limit:.0f} s")
            continue
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            results.append({"mode": mode, "error": f"exit {proc.returncode}: " + " | ".join(tail)[-600:]})
            say(f"{mode}: failed (exit {proc.returncode})")
            continue
        result = json.loads(lines[-1][len("RESULT ") :])
        result["process_s"] = round(time.monotonic() - started, 1)
        if result.get("compile_error"):
            say(f"{mode}: torch.compile failed, timed without it: {result['compile_error']}")
        results.append(result)
    cpu = next((r for r in results if r.get("mode") == "cpu-fp32" and "ms_per_step" in r), None)
    for r in results:
        if cpu and "ms_per_step" in r:
            r["speedup_vs_cpu"] = round(cpu["ms_per_step"] / r["ms_per_step"], 1)
    return results


def table(results: list[dict[str, Any]], env: dict[str, Any], config: Path) -> str:
    head = ["mode", "precision", "compiled", "ms/step", "frames/s", "vs CPU", "first step s", "steps"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["mode"], "-", "-", "-", "-", "-", "-", r["error"][:70]])
            continue
        compiled = "yes" if r["compiled"] else ("FAILED" if r.get("compile_error") else "no")
        rows.append(
            [
                r["mode"] + (f" ({r['threads']} threads)" if r.get("threads") else ""),
                r["precision"],
                compiled,
                f"{r['ms_per_step']:.2f}",
                f"{r['frames_per_s']:.0f}",
                f"{r['speedup_vs_cpu']:.1f}x" if "speedup_vs_cpu" in r else "-",
                f"{r['first_step_s']:.1f}",
                str(r["steps"]),
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [
        f"torchfit frames training step ({config.name}): torch {env['torch']}, CUDA {env.get('cuda')}, "
        f"GPU {env.get('gpu', 'none')}, {env['cpu_cores']} CPU cores",
        line(head),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        *(line(r) for r in rows),
    ]
    for r in results:
        if r.get("compile_error"):
            out.append(f"torch.compile failed in {r['mode']} (timed eagerly instead): {r['compile_error']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the small sample config and 2 s windows (a smoke test)")
    p.add_argument("--config", type=Path, default=None, help="a frames config (default: sample/frames-bench.yaml)")
    p.add_argument("--budget", type=float, default=160, help="seconds for all modes together (hard)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated, from: " + ", ".join(MODES))
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    p.add_argument("--table", type=Path, default=None, help="also write the table to this file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--window", type=float, default=5, help=argparse.SUPPRESS)
    p.add_argument("--max-steps", type=int, default=1000, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    config = args.config or (QUICK_CONFIG if args.quick else BENCH_CONFIG)

    if args.child:
        print("RESULT " + json.dumps(run_mode(args.child, config, args.window, args.max_steps)), flush=True)
        return 0

    def say(msg: str) -> None:
        print(f"bench/gpu.py: {msg}", file=sys.stderr, flush=True)

    env = environment()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        p.error(f"unknown modes {unknown}")
    if "gpu" not in env:
        say("no CUDA device visible: only the CPU mode runs")
        modes = [m for m in modes if MODES[m][0] == "cpu"]
    elif env.get("gpu_bf16") is False:
        say("this GPU has no bf16: the bf16 modes run in fp32")
    results = measure(modes, config, args.budget, args.quick, say)
    text = table(results, env, config)
    print(text, flush=True)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": str(config.relative_to(ROOT) if config.is_relative_to(ROOT) else config),
        "quick": args.quick,
        "environment": env,
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(text + "\n")
    return 0 if any("ms_per_step" in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""torchfit's `frames` kind (the GPU reference workload) on the CPU: the frame generator, the
config kinds, training on the sample config, predict with the saved model, the compile
fallback, and the CPU smoke run of bench/gpu.py. Needs torch in the test environment (the CPU
wheel: `pip install torch==2.13.0` takes it from $PIP_FIND_LINKS); skipped without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent.parent
APP = ROOT / "images" / "torchfit"
SAMPLE = APP / "sample"
sys.path.insert(0, str(APP))

from torchfit import data as tdata  # noqa: E402
from torchfit import frames as fr  # noqa: E402


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(APP), "TORCHFIT_DEVICE": "cpu", "MPLCONFIGDIR": "/tmp/matplotlib"}
    env.pop("TORCHFIT_EPOCHS", None)
    return {**env, **extra}


SMALL = {**tdata.FRAMES_DEFAULTS, "frame_size": 16, "spots": 3, "channels": [8, 8]}


# -- the generator ---------------------------------------------------------------------------


def test_frames_are_the_same_for_a_seed_and_differ_between_seeds() -> None:
    a, b, c = fr.make_frames(8, SMALL, 5), fr.make_frames(8, SMALL, 5), fr.make_frames(8, SMALL, 6)
    for key in ("frames", "target", "positions", "present"):
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["frames"], c["frames"])
    assert a["frames"].shape == (8, 1, 16, 16) and a["target"].shape == (8, 3, 16, 16)
    assert a["frames"].dtype == torch.float32 and bool((a["frames"] >= 0).all())


def test_targets_mark_the_pixel_of_each_spot_and_its_sub_pixel_offset() -> None:
    d = fr.make_frames(16, SMALL, 1)
    spots = int(d["present"].sum())
    marked = int(d["target"][:, 0].sum())
    assert 0 < marked <= spots and marked >= spots - 3  # two spots in one pixel count once
    n, k = d["present"].nonzero(as_tuple=True)
    x, y = d["positions"][n, k, 0], d["positions"][n, k, 1]
    ix, iy = x.floor().long(), y.floor().long()
    assert bool((d["target"][n, 0, iy, ix] == 1).all())
    dx = d["target"][n, 1, iy, ix]
    assert float((dx.abs() <= 0.5 + 1e-6).float().mean()) == 1.0
    # Where exactly one spot lies in a pixel, its offset is stored exactly.
    assert torch.allclose(dx, x - ix - 0.5, atol=1e-5) or marked < spots
    # Spots are brighter than the background: the marked pixels stand out.
    frames = d["frames"][:, 0]
    assert float(frames[n, iy, ix].mean()) > float(frames.mean()) + 5


def test_localise_and_match_score_a_perfect_output() -> None:
    d = fr.make_frames(4, SMALL, 2)
    t = d["target"]
    # An ideal network output: large logits on spot pixels, the true offsets.
    out = torch.cat([t[:, :1] * 40 - 20, t[:, 1:]], 1)
    locs = fr.localise(out)
    scores = fr.match(locs, d["positions"], d["present"])
    assert scores["precision"] == 1.0 and scores["recall"] > 0.9 and scores["rmse_px"] < 1e-4


# -- the config --------------------------------------------------------------------------------


def test_kind_picks_the_defaults_and_the_allowed_keys(tmp_path: Path) -> None:
    mlp = tdata.load_config(str(SAMPLE / "config.yaml"))
    assert "kind" not in mlp and mlp["hidden"] == [64, 64]  # the mlp config is as it always was
    frames = tdata.load_config(str(SAMPLE / "frames.yaml"))
    assert frames["kind"] == "frames" and frames["channels"] == [16, 24, 16]
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: frames\nhidden: [3]\n")
    with pytest.raises(SystemExit, match=r"unknown config keys \['hidden'\]"):
        tdata.load_config(str(bad))
    bad.write_text("kind: cnn\n")
    with pytest.raises(SystemExit, match="unknown kind 'cnn'"):
        tdata.load_config(str(bad))
    bad.write_text("kind: mlp\nchannels: [3]\n")
    with pytest.raises(SystemExit, match=r"unknown config keys \['channels'\]"):
        tdata.load_config(str(bad))


@pytest.mark.parametrize("name", ["config.yaml", "bench.yaml", "frames.yaml", "frames-bench.yaml"])
def test_configs_read_the_same_without_pyyaml(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (SAMPLE / name).read_text()
    with_yaml = tdata.parse_yaml(text)
    monkeypatch.setattr(tdata, "yaml", None)
    assert tdata.parse_yaml(text) == with_yaml


# -- training and predict ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample frames config trained on the CPU, as `python -m torchfit.train` runs it, on one
    thread (on a machine shared by several sessions, threads that wait for each other spin)."""
    import resource

    where = tmp_path_factory.mktemp("frames")
    t0 = time.perf_counter()
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchfit.train",
            "--config",
            str(SAMPLE / "frames.yaml"),
            "--model",
            str(where / "model"),
            "--output",
            str(where / "output"),
            "--log",
            str(where / "log"),
        ],
        env=_env(OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    (where / "timing.json").write_text(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": cpu_s}))
    return where


def test_the_sample_trains_in_under_a_minute_and_the_loss_falls(trained: Path) -> None:
    metrics = json.loads((trained / "output" / "metrics.json").read_text())
    assert metrics["kind"] == "frames" and metrics["device"] == "cpu" and metrics["epochs"] == 8
    # Under a minute on 2 cores: the whole process (start, training, outputs) on one thread takes
    # less than a minute of CPU time, so it would fit in a minute on one idle core. CPU time rather than
    # wall time: a shared machine (several sessions on 2 cores) can stretch the wall clock.
    timing = json.loads((trained / "timing.json").read_text())
    assert timing["cpu_s"] < 60, (timing, metrics)
    losses = [line.split(",") for line in (trained / "output" / "losses.csv").read_text().splitlines()[1:]]
    train = [float(r[1]) for r in losses]
    assert len(train) == 8 and train[-1] < 0.5 * train[0]
    assert metrics["validation_recall"] > 0.3 and metrics["validation_precision"] > 0.8
    assert (trained / "output" / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((trained / "model" / "model.json").read_text())
    assert meta["kind"] == "frames" and meta["channels"] == [16, 24, 16] and meta["trained_on"] == "cpu"
    assert "train.log" in os.listdir(trained / "log")


def test_predict_runs_the_saved_model_on_the_cpu(trained: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "torchfit.predict", "--artifact", str(trained / "model"), "--output", str(tmp_path / "out")],
        env=_env(TORCHFIT_DEVICE="auto"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["device"] == "cpu" and metrics["frames"] == 64 and metrics["recall"] > 0.3
    rows = (tmp_path / "out" / "localisations.csv").read_text().splitlines()
    assert rows[0] == "frame,x,y,probability" and len(rows) - 1 == metrics["localisations"] > 0


def test_predict_reads_frames_given_as_pt_and_npy(trained: Path, tmp_path: Path) -> None:
    import numpy

    config = tdata.load_config(str(SAMPLE / "frames.yaml"))
    d = fr.make_frames(6, {**config, "frame_size": 40}, 99)  # another size: the net is fully convolutional
    (tmp_path / "data").mkdir()
    torch.save(d["frames"][:4, 0].clone(), tmp_path / "data" / "a.pt")
    numpy.save(tmp_path / "data" / "b.npy", d["frames"][4, 0].numpy())
    # A CSV beside them (the catalog's predict always passes /files/data) is not read.
    (tmp_path / "data" / "table.csv").write_text("x,y\n1,2\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchfit.predict",
            "--artifact",
            str(trained),
            "--data",
            str(tmp_path / "data"),
            "--output",
            str(tmp_path / "out"),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["frames"] == 5 and "a.pt (4, 40, 40)" in metrics["source"] and "recall" not in metrics
    frames_seen = {int(r.split(",")[0]) for r in (tmp_path / "out" / "localisations.csv").read_text().splitlines()[1:]}
    assert frames_seen <= set(range(5)) and len(frames_seen) >= 3


def test_a_gpu_trained_state_dict_loads_on_the_cpu(tmp_path: Path) -> None:
    """What train saves: the plain module's tensors, contiguous (a CUDA run keeps its weights
    channels-last), so torch.load(map_location='cpu') and load_state_dict work anywhere."""
    net = fr.FrameNet([8, 8]).to(memory_format=torch.channels_last)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    assert not any(k.startswith("_orig_mod") for k in state)
    torch.save(state, tmp_path / "model.pt")
    fresh = fr.FrameNet([8, 8])
    fresh.load_state_dict(torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True))
    x = torch.rand(2, 1, 12, 12)
    assert torch.allclose(fresh(x), net(x.contiguous(memory_format=torch.channels_last)), atol=1e-5)


def test_mlp_kind_still_trains_and_predicts(tmp_path: Path) -> None:
    run = lambda *a: subprocess.run([sys.executable, "-m", *a], env=_env(TORCHFIT_EPOCHS="5"), capture_output=True, text=True, timeout=120)  # noqa: E731
    proc = run(
        "torchfit.train",
        "--data",
        str(SAMPLE / "data"),
        "--config",
        str(SAMPLE / "config.yaml"),
        "--model",
        str(tmp_path / "m"),
        "--output",
        str(tmp_path / "o"),
        "--log",
        str(tmp_path / "l"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["epochs"] == 5
    proc = run("torchfit.predict", "--artifact", str(tmp_path / "m"), "--data", str(SAMPLE / "data"), "--output", str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mse" in json.loads((tmp_path / "p" / "metrics.json").read_text())
    proc = run(
        "torchfit.train",
        "--config",
        str(SAMPLE / "config.yaml"),
        "--model",
        str(tmp_path / "m2"),
        "--output",
        str(tmp_path / "o2"),
        "--log",
        str(tmp_path / "l2"),
    )
    assert proc.returncode != 0 and "--data is required" in proc.stderr


# -- the GPU-friendly step -----------------------------------------------------------------------


def test_a_failing_compile_falls_back_to_eager_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(fn, *a, **k):
        def run(*args, **kwargs):
            raise RuntimeError("no compiler here\nmore detail")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    t = fr.Trainer(SMALL, torch.device("cpu"), compile=True)
    assert t.compiled
    d = fr.make_frames(8, SMALL, 0)
    before = [p.detach().clone() for p in t.model.parameters()]
    loss = t.step(d["frames"], d["target"])
    assert torch.isfinite(loss) and not t.compiled and t.compile_error == "RuntimeError: no compiler here"
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters()))  # the step happened
    t.step(d["frames"], d["target"])  # and later steps run eagerly


def test_precision_and_compile_choices_on_the_cpu() -> None:
    cpu = torch.device("cpu")
    assert fr.resolve_precision("auto", cpu) is None and fr.resolve_precision("fp32", cpu) is None
    assert fr.resolve_precision("bf16", cpu) == torch.bfloat16
    assert fr.resolve_compile("auto", cpu) is False and fr.resolve_compile(False, cpu) is False
    with pytest.raises(SystemExit):
        fr.resolve_precision("fp8", cpu)
    with pytest.raises(SystemExit):
        fr.resolve_compile("maybe", cpu)


def test_step_returns_a_device_tensor_and_bf16_autocast_trains_on_the_cpu() -> None:
    t = fr.Trainer(SMALL, torch.device("cpu"), precision="bf16")
    d = fr.make_frames(16, SMALL, 0)
    losses = [t.step(d["frames"], d["target"]) for _ in range(15)]
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 and not v.requires_grad for v in losses)
    assert float(losses[-1]) < float(losses[0])


def test_generate_on_cpu_trains_the_same_way(tmp_path: Path) -> None:
    config = {
        **tdata.FRAMES_DEFAULTS,
        "kind": "frames",
        "frame_size": 16,
        "channels": [8],
        "train_frames": 64,
        "validation_frames": 16,
        "batch_size": 16,
        "epochs": 2,
        "generate_on": "cpu",
    }
    result = fr.fit(config, torch.device("cpu"))
    assert result["epochs_run"] == 2 and result["steps"] == 8 and len(result["history"]["validation"]) == 2


# -- bench/gpu.py on a machine without CUDA ------------------------------------------------------


def test_bench_gpu_quick_runs_the_cpu_mode_and_writes_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu.py"),
            "--quick",
            "--budget",
            "90",
            "--json",
            str(tmp_path / "gpu.json"),
            "--table",
            str(tmp_path / "gpu.txt"),
        ],
        env=_env(CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    (cpu,) = report["results"]
    assert cpu["mode"] == "cpu-fp32" and cpu["ms_per_step"] > 0 and cpu["speedup_vs_cpu"] == 1.0
    assert "| cpu-fp32" in proc.stdout and (tmp_path / "gpu.txt").read_text().strip() in proc.stdout
    assert "no CUDA device" in proc.stderr

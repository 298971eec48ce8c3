"""`python -m ltx.run` end to end on a tiny setting: the files a run promises, finite numbers."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY

ROOT = Path(__file__).resolve().parents[1]


def run_ltx(args: list[str], cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LTX_CACHE_DIR": str(cache_dir), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ltx.run", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_default_run_end_to_end(tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = run_ltx([*TINY, f"hydra.run.dir={out}"], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ["results.csv", "results.md", "run_info.json", "maps_textures_vit.png", "maps_textures_resnet.png",
                 "explainers/textures_vit/predicted.safetensors", "explainers/textures_resnet/target.safetensors"]:
        assert (out / name).is_file(), name
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["backbone"] for r in rows} == {"textures_vit", "textures_resnet"}
    methods = {(r["backbone"], r["method"]) for r in rows}
    # the selected methods, and the oracle the suite's validity check needs (random is selected too)
    assert {m for b, m in methods if b == "textures_vit"} == {"ltx", "ltx_sel", "ltx_pretrained", "gradcam", "rollout",
                                                             "random", "gt_mask"}
    assert ("textures_resnet", "rollout") not in methods  # ViT-only: skipped with a log line, not an error
    assert {r["class_mode"] for r in rows} == {"predicted", "target"}
    assert {r["metric"] for r in rows} == {"pos", "neg", "ins", "del", "road_morf_acc", "road_lerf_acc",
                                           "road_morf_prob", "road_lerf_prob", "pointing_game",
                                           "energy_pointing_game", "gt_auroc", "faithfulness"}
    assert all(math.isfinite(float(r["value"])) for r in rows)
    assert "results written to" in proc.stderr + proc.stdout
    report = (out / "results.md").read_text()
    assert "| ltx |" in report and "### Benchmark validity" in report
    info = json.loads((out / "run_info.json").read_text())
    assert set(info["benchmark_validity"]) == {"textures_vit", "textures_resnet"}
    assert {c["metric"] for c in info["benchmark_validity"]["textures_vit"]["checks"]} == {
        "pos", "neg", "ins", "del", "road_morf_acc", "road_lerf_acc", "road_morf_prob", "road_lerf_prob"}
    assert "benchmark validity textures_vit" in proc.stderr + proc.stdout
    # saved maps re-evaluated with another suite, no map recomputed
    before = {p: p.stat().st_mtime_ns for p in (out / "maps").rglob("*.safetensors")}
    env = {**os.environ, "LTX_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run([sys.executable, "-m", "ltx.evaluate", f"run_dir={out}", "eval=paper"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.csv") as f:
        # faithfulness: the run's oracle and random maps are there, so the four curves are placed between them
        assert {r["metric"] for r in csv.DictReader(f)} == {"pos", "neg", "ins", "del", "faithfulness"}
    assert before == {p: p.stat().st_mtime_ns for p in (out / "maps").rglob("*.safetensors")}
    assert "gt_auroc" in (out / ".hydra" / "config.yaml").read_text()  # the run's own config is untouched
    # black boxes are cached: a second run (other output dir) trains nothing
    vit_only = [a for a in TINY if not a.startswith(("backbone.textures_resnet", "method."))]
    again = run_ltx([*vit_only, f"hydra.run.dir={tmp_path / 'again'}", "backbone=textures_vit", "method=[random]"],
                    cache_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cached weights" in again.stderr + again.stdout


@pytest.mark.slow
def test_a_run_of_baselines_pretrains_nothing_prints_lightning_once_and_ends_with_its_summary(tmp_path, cache_dir):
    out = tmp_path / "run"
    baselines = [a for a in TINY if not a.startswith("method")] + ["method=[random,gradcam]", "eval=paper",
                                                                   "logger=[]"]
    proc = run_ltx([*baselines, f"hydra.run.dir={out}"], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "pretraining: none, no method of this run is built on a pretrained explainer" in console
    assert not (out / "explainers").exists() and not (out / "checkpoints").exists()
    with open(out / "results.csv") as f:
        assert {r["method"] for r in csv.DictReader(f)} == {"random", "gradcam"}
    assert console.count("Seed set to 0") == 1, console[:3000]  # Lightning's line once, not also its own copy
    summary = console[console.index("run summary"):]
    for stage in ("data", "black boxes", "pretrain", "explain", "evaluate", "total"):
        assert f"\n {stage} " in summary, stage
    assert f"report: {out / 'results.html'}" in summary and (out / "results.html").is_file()


def test_unknown_backbone_lists_the_choices(tmp_path, cache_dir):
    proc = run_ltx(["backbone=vit_xxl", f"hydra.run.dir={tmp_path}"], cache_dir)
    assert proc.returncode != 0
    assert "Could not find 'backbone/vit_xxl'" in proc.stderr and "textures_resnet" in proc.stderr


def test_a_value_out_of_range_is_one_line_without_a_traceback(tmp_path, cache_dir):
    # Hydra wraps the constructor's ValueError in an InstantiationException: the cause is reported.
    proc = run_ltx(["loss.mask_weight=-1", "backbone=textures_vit", f"hydra.run.dir={tmp_path}"], cache_dir)
    assert proc.returncode == 1
    assert "error: loss.mask_weight must be >= 0, got -1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_reevaluating_a_directory_that_is_no_run_is_one_line_without_a_traceback(tmp_path, cache_dir):
    env = {**os.environ, "LTX_CACHE_DIR": str(cache_dir)}
    proc = subprocess.run([sys.executable, "-m", "ltx.evaluate", f"run_dir={tmp_path / 'missing'}"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert f"error: no run config at {tmp_path / 'missing' / '.hydra' / 'config.yaml'}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                    reason="a GPU is visible: trainer=gpu is valid here")
def test_a_gpu_trainer_without_a_gpu_is_one_line_without_a_traceback(tmp_path, cache_dir):
    proc = run_ltx(["trainer=gpu", f"hydra.run.dir={tmp_path}"], cache_dir)
    assert proc.returncode == 1
    assert "error: trainer.accelerator=gpu, but no GPU is visible on this machine: use trainer=cpu" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "No supported gpu backend" not in proc.stderr


@pytest.mark.slow
def test_the_default_benchmark_is_valid_on_its_own_black_boxes(tmp_path, cache_dir):
    """The embedded default's black boxes, as `make run` trains them (cached for the session): on test
    images the ground-truth mask beats random maps by the margins of ltx.metrics.validity on every
    required check (POS/DEL/NEG/INS and ROAD MoRF; ROAD LeRF is shown only). No explainer is needed
    for the references, so none is pretrained."""
    proc = run_ltx(["method=[random]", "class_modes=[target]", "explain.num_images=96", "explain.grid_images=1",
                    "trainer.enable_progress_bar=false", "logger=[]", f"hydra.run.dir={tmp_path}"], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    validity = json.loads((tmp_path / "run_info.json").read_text())["benchmark_validity"]
    assert set(validity) == {"textures_vit", "textures_resnet"}
    for backbone, entry in validity.items():
        assert len(entry["checks"]) == 8, backbone
        assert entry["passed"], (backbone, [c for c in entry["checks"] if c["metric"] in entry["failed"]])

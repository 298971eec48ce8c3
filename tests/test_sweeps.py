"""Sweeps: the ablation and Optuna configs compose into the jobs they promise, `ltx.run` returns the
configured result, a multirun ends in one table row per job."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from experiments import sweep_table
from ltx.pipeline import run_pipeline
from ltx.stages.checks import check_config
from ltx.stages.evaluate import sweep_metric
from ltx.store import metric_values, read_results, write_results
from tests.helpers import CONF_DIR, TINY_VIT, compose_config, tiny_vit
from tests.test_run import run_ltx

ABLATIONS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("ablation_*.yaml"))


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of a config's `hydra.sweeper.params`: one override list each."""
    params = compose_config(overrides).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in parsed]
    return [list(job) for job in itertools.product(*choices)]


def test_every_paper_ablation_has_a_config() -> None:
    assert ABLATIONS == ["ablation_cross_architecture", "ablation_decoder", "ablation_losses",
                         "ablation_masking", "ablation_pretraining"]


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablation_jobs_compose_and_differ(name: str) -> None:
    base = [f"+experiment={name}"]
    assert compose_config(base).hydra.mode.name == "MULTIRUN"  # runs as a sweep without -m
    jobs = sweep_jobs(base)
    assert len(jobs) >= 2
    configs = []
    for job in jobs:
        cfg = compose_config([*base, *job])
        check_config(cfg)
        configs.append(OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"}))
    assert len(set(configs)) == len(jobs)  # every job is a different run


def test_ablation_masking_covers_baselines_soft_and_hard() -> None:
    jobs = sweep_jobs(["+experiment=ablation_masking"])
    assert {tuple(sorted(job)) for job in jobs} == {
        (f"masking.hard={hard}", f"masking={m}") for m in ("constant", "mean", "blur", "noise", "learned")
        for hard in ("False", "True")}  # as Hydra writes the swept bools


def test_optuna_search_composes() -> None:
    cfg = compose_config(["hparams_search=ltx_optuna"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.optimized_metric == "ltx/predicted/faithfulness" and cfg.hydra.sweeper.direction == "maximize"
    assert cfg.explain.split == "val"  # tuned on validation images, not on the test images
    check_config(cfg)


@pytest.mark.parametrize("key, message", [
    ("ltx/predicted", "must be METHOD/CLASS_MODE/METRIC"),
    ("gradcam/predicted/neg", "method 'gradcam' is not in this run"),
    ("ltx/target/neg", "class_mode 'target' is not in this run"),
    ("textures_resnet/ltx/predicted/neg", "backbone 'textures_resnet' is not in this run"),
])
def test_bad_optimized_metric_fails_before_the_run(key: str, message: str) -> None:
    cfg = compose_config(["backbone=textures_vit", "method=[ltx]", "class_modes=[predicted]",
                          f"optimized_metric={key}"])
    with pytest.raises(ValueError, match=message):
        check_config(cfg)


def test_unknown_explainer_source_fails_before_the_run() -> None:
    with pytest.raises(ValueError, match="explainer_from=vit_b is not a backbone"):
        check_config(compose_config(["pretrain.explainer_from=vit_b"]))


def test_sweep_metric_is_the_mean_over_backbones_or_one_backbone() -> None:
    rows = [dict(backbone=b, method="ltx", class_mode="predicted", metric="neg", value=v)
            for b, v in (("vit", 40.0), ("cnn", 50.0))]
    assert sweep_metric(OmegaConf.create({"optimized_metric": "ltx/predicted/neg"}), rows) == 45.0
    assert sweep_metric(OmegaConf.create({"optimized_metric": "cnn/ltx/predicted/neg"}), rows) == 50.0
    assert sweep_metric(OmegaConf.create({"optimized_metric": None}), rows) is None
    with pytest.raises(ValueError, match="has no result"):
        sweep_metric(OmegaConf.create({"optimized_metric": "ltx/target/neg"}), rows)
    assert set(metric_values(rows)) == {"ltx/predicted/neg", "vit/ltx/predicted/neg", "cnn/ltx/predicted/neg"}




def test_per_backbone_columns_take_the_same_method_patterns(tmp_path: Path) -> None:
    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- loss.mask_weight=5\n")
    write_results(job / "results.csv", [
        dict(backbone=b, method=m, class_mode="predicted", metric="neg", value=v)
        for b, m, v in (("vit", "ltx", 40.0), ("cnn", "ltx", 50.0), ("vit", "ig", 30.0))])
    _, columns, rows = sweep_table.collect(tmp_path, ["ltx/*/*"], per_backbone=True)
    assert columns == ["job", "cnn/ltx/predicted/neg", "vit/ltx/predicted/neg"]
    assert rows[0]["vit/ltx/predicted/neg"] == 40.0
    assert sweep_table.collect(tmp_path, ["ltx/*/*"])[1] == ["job", "ltx/predicted/neg"]


def read_table(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_multirun_of_two_jobs_gives_a_table_of_two_rows(tmp_path: Path, cache_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_ltx(["-m", *TINY_VIT, "loss.mask_weight=1,20", f"hydra.sweep.dir={sweep}"], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep_table.main([str(sweep), "--metrics", "ltx/*/*"])
    rows = read_table(sweep / "sweep_table.csv")
    assert [(r["job"], r["loss.mask_weight"]) for r in rows] == [("0", "1"), ("1", "20")]
    for row, job in zip(rows, ("0", "1")):
        expected = metric_values(read_results(sweep / job / "results.csv"))
        assert float(row["ltx/predicted/neg"]) == pytest.approx(expected["ltx/predicted/neg"])
        assert set(row) == {"job", "loss.mask_weight", "ltx/predicted/pos", "ltx/predicted/neg",
                            "ltx/predicted/ins", "ltx/predicted/del"}
    markdown = (sweep / "sweep_table.md").read_text()
    assert "backbone=textures_vit" in markdown.splitlines()[0]  # shared overrides above the table
    assert markdown.count("\n| 0 | 1 |") == 1 and markdown.count("\n| 1 | 20 |") == 1


@pytest.mark.slow
def test_optuna_search_runs_two_trials(tmp_path: Path, cache_dir: Path) -> None:
    sweep = tmp_path / "optuna"
    # INS, not the configured NEG: on these tiny models NEG is 0 for every trial, INS tells trials apart
    proc = run_ltx(["hparams_search=ltx_optuna", *TINY_VIT, "optimized_metric=ltx/predicted/ins",
                    "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2",
                    f"hydra.sweep.dir={sweep}"], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = sorted(p.name for p in sweep.iterdir() if (p / "results.csv").is_file())
    assert trials == ["0", "1"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = [metric_values(read_results(sweep / t / "results.csv"))["ltx/predicted/ins"]
              for t in trials]
    assert values[0] != values[1]
    assert math.isfinite(best["best_value"]) and best["best_value"] == pytest.approx(max(values))
    assert set(best["best_params"]) == {"loss.mask_weight", "method.ltx.lr"}


@pytest.mark.slow
def test_cross_architecture_explains_both_black_boxes_with_the_vit_explainer(tmp_path: Path,
                                                                            cache_dir: Path) -> None:
    out = tmp_path / "run"
    cfg = compose_config(tiny_vit(
        "backbone=[textures_vit,textures_resnet]", "backbone.textures_vit.weights=random",
        "backbone.textures_resnet.weights=random", "pretrain.epochs=0", "method=[ltx,ltx_pretrained]",
        "pretrain.explainer_from=textures_vit", "optimized_metric=textures_resnet/ltx/predicted/ins",
        f"paths.output_dir={out}", f"paths.cache_dir={cache_dir}"))
    value = run_pipeline(cfg)
    # one explainer, made once, for both black boxes
    assert sorted(p.name for p in (out / "explainers").iterdir()) == ["textures_vit"]
    values = metric_values(read_results(out / "results.csv"))
    assert value == values["textures_resnet/ltx/predicted/ins"]
    assert {"textures_vit/ltx/predicted/ins", "textures_resnet/ltx_pretrained/predicted/ins"} <= set(values)

"""A run: the stages of `ltx.stages`, in order, each reading and writing the run directory:

black boxes (trained once, cached: `blackbox`) → explainer pretraining per class mode (`pretrain`)
→ maps of every method (`explain`) → evaluation and report (`evaluate`). A stage whose output is
already in the run directory is skipped, so a killed run restarted with the same `hydra.run.dir`
resumes where it stopped; every stage seeds itself (`seed_stage`), so the resumed run ends with
the numbers of an uninterrupted one.

Several processes (`trainer=ddp`, `trainer=ddp_cpu`): Lightning's `ddp` strategy relaunches this
command once per extra rank at the first trainer call (torchrun / SLURM start the ranks
themselves), and from then on every rank runs every stage in step. Pretraining splits each batch
over the ranks (`train_loader`); maps are made under `trainer.predict`, whose unrepeated
distributed sampler gives each rank every W-th instance, written per rank; evaluation shards the
instances the same way and syncs the torchmetrics; rank 0 alone writes results and reports.
`ddp_spawn` / `ddp_fork` are refused: they run only the trainer calls in their processes (and
spawn re-imports everything per call), so the sharded evaluation would have no process group.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Subset

from ltx.data import seeded_subset
from ltx.masking import Masking
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer
from ltx.stages.blackbox import ensure_blackbox
from ltx.stages.checks import check_config
from ltx.stages.evaluate import Evaluation, evaluate_and_report, sweep_metric
from ltx.stages.explain import explain_instances
from ltx.stages.pretrain import pretrain_explainer, pretraining_plan
from ltx.stages.runtime import barrier, check_processes, make_trainer
from ltx.stages.summary import RunSummary
from ltx.store import MapStore

log = logging.getLogger(__name__)


def prepare_data(cfg: DictConfig) -> tuple[L.LightningDataModule, Subset]:
    """The data module and the instances to explain (a seeded subset of `explain.split`; all of it, with a
    warning, when `explain.num_images` asks for more: the run still gives results, on fewer images)."""
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    split = {"train": datamodule.train_set, "val": datamodule.val_set, "test": datamodule.test_set}[cfg.explain.split]
    if cfg.explain.num_images > len(split):
        log.warning("explain.num_images=%d is more than the %d images of the %s split: explaining all %d",
                    cfg.explain.num_images, len(split), cfg.explain.split, len(split))
    instances = seeded_subset(split, num_samples=min(cfg.explain.num_images, len(split)), seed=cfg.seed)
    return datamodule, instances


def data_stage(cfg: DictConfig, summary: RunSummary) -> tuple[L.LightningDataModule, Subset]:
    """`prepare_data`, timed as the summary's first stage."""
    with summary.stage("data") as stage:
        datamodule, instances = prepare_data(cfg)
        stage.note = f"{len(instances)} {cfg.explain.split} images to explain"
    return datamodule, instances


def blackbox_stage(cfg: DictConfig, datamodule: L.LightningDataModule,
                   summary: RunSummary) -> dict[str, ExplainedModel]:
    """The explained models of the run's backbones, trained or read from the cache (`ensure_blackbox`)."""
    with summary.stage("black boxes") as stage:
        models = {name: ensure_blackbox(cfg, name, spec, datamodule) for name, spec in cfg.backbone.items()}
        stage.note = ", ".join(models)
    return models


def evaluate_stage(cfg: DictConfig, models: dict[str, ExplainedModel], datamodule: L.LightningDataModule,
                   instances: Subset, summary: RunSummary) -> Evaluation:
    """`evaluate_and_report`, timed as the summary's last stage."""
    with summary.stage("evaluate") as stage:
        result = evaluate_and_report(cfg, models, datamodule, instances)
        stage.note = f"{len(result.rows)} values of {len(cfg.eval.metrics)} metrics in results.csv, results.md"
    return result


def run_pipeline(cfg: DictConfig) -> float | None:
    """All stages for every backbone; stages whose outputs exist in the run directory are skipped.
    Ends with the summary of the stages (`RunSummary`). Returns `optimized_metric` (None when not set)."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    summary = RunSummary(run_dir)
    datamodule, instances = data_stage(cfg, summary)
    check_processes(cfg, make_trainer(cfg), len(instances))
    models = blackbox_stage(cfg, datamodule, summary)
    store = MapStore(run_dir / "maps")
    pretrained: dict[str, dict[str, tuple[Explainer | None, Masking | None]]] = {}
    users = pretraining_plan(cfg)
    for name, explained in models.items():
        # cross-architecture: every backbone explained by the explainer pretrained on `explainer_from`
        origin = cfg.pretrain.get("explainer_from") or name
        with summary.stage("pretrain") as stage:
            if origin not in pretrained:
                pretrained[origin] = {
                    mode: pretrain_explainer(cfg, run_dir, origin, models[origin], datamodule, mode) if users
                    else (None, None) for mode in cfg.class_modes}
            stage.note = (f"explainers of {', '.join(pretrained)} ({', '.join(cfg.class_modes)}) "
                          f"for {', '.join(users)}" if users else "none: no method of this run uses an explainer")
        with summary.stage("explain") as stage:
            explain_instances(cfg, store, name, explained, pretrained[origin], instances)
            stage.note = f"map sets in maps/ (one per backbone, method and class mode): {len(store.keys())}"
    barrier()  # every rank's maps are on disk before any rank reads them
    result = evaluate_stage(cfg, models, datamodule, instances, summary)
    summary.log(result.report)
    return sweep_metric(cfg, result.rows)


def reevaluate(run_dir: str | Path, eval_cfg: DictConfig | None = None) -> Evaluation:
    """Re-evaluate a finished run's saved maps (optionally with another suite), recomputing no map."""
    run_dir = Path(run_dir)
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"no run config at {saved}: run_dir must be the output directory of `ltx.run`")
    cfg = OmegaConf.load(saved)
    cfg.paths.output_dir = str(run_dir)
    if eval_cfg is not None:
        cfg.eval = eval_cfg
    summary = RunSummary(run_dir)
    datamodule, instances = data_stage(cfg, summary)
    result = evaluate_stage(cfg, blackbox_stage(cfg, datamodule, summary), datamodule, instances, summary)
    summary.log(result.report)
    return result

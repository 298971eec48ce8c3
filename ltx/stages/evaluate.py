"""Stage 4, evaluation: every saved map set scored with the `eval` suite (`eval.metrics`), then rank 0
writes results.csv, run_info.json (black-box accuracy, the benchmark's validity check, the unranked
methods, each method's settings), the report and the loggers' copies."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from omegaconf import DictConfig
from torch.utils.data import Subset
from torchmetrics import Metric

from ltx.data import instance_ids
from ltx.methods.ltx import degeneracy_warning, degenerate_masks
from ltx.metrics import METRICS, create_metric
from ltx.metrics.perturbation import PerturbationCurve
from ltx.metrics.suite import PerturbationSuite
from ltx.metrics.validity import benchmark_validity, describe, faithfulness_rows
from ltx.models.explained import ExplainedModel
from ltx.progress import track
from ltx.report import log_results, write_report
from ltx.stages.blackbox import accuracy
from ltx.stages.explain import unranked
from ltx.stages.pretrain import explainer_methods
from ltx.stages.runtime import loader, make_loggers, rank_zero_view, world
from ltx.store import MapKey, MapStore, metric_values, write_json, write_results

log = logging.getLogger(__name__)

def build_metrics(eval_cfg: DictConfig, explained: ExplainedModel) -> dict[str, Metric]:
    """The suite's metrics for one explained model; `chunk_size` bounds each forward pass."""
    options = eval_cfg.get("options") or {}
    metrics = {}
    for name in eval_cfg.metrics:
        kwargs = dict(options.get(name, {}))
        if issubclass(METRICS[name], PerturbationCurve):
            kwargs.setdefault("chunk_size", eval_cfg.chunk_size)
        metrics[name] = create_metric(name, explained, **kwargs)
    return metrics


@dataclass
class Evaluation:
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: mean perturbation curves: (backbone, method, class_mode, metric) → values per step
    curves: dict[tuple[str, str, str, str], list[float]] = field(default_factory=dict)
    #: map sets with degenerate masks (`ltx.methods.ltx.degenerate_masks`): str(MapKey) → the warning
    degenerate: dict[str, str] = field(default_factory=dict)
    #: results.html, written by the first process (None on the others)
    report: Path | None = None


#: per-image perturbation curves of one backbone's evaluation: (metric, instance index, map digest) → (S,)
ScoredCurves = dict[tuple[str, int, str], torch.Tensor]


def evaluate(cfg: DictConfig, store: MapStore, name: str, explained: ExplainedModel, instances: Subset,
             result: Evaluation) -> None:
    """Evaluate every saved map set of backbone `name` with the `eval` suite, into `result`.

    Every score uses the ground-truth label whatever the class mode (PerturbationCurve, the
    localization metrics), so an instance's perturbation curves depend only on its image and its
    map: an instance whose map (bit for bit) was scored in an earlier map set gets those curves
    again instead of being scored again (`update_batch`). That is most of a baseline's maps in
    its second class mode (`explain_instances` reuses the first mode's wherever the class
    explained is the same) and all of the oracle's and random maps there.

    Under DDP each rank evaluates every W-th instance (as `trainer.predict` shards them), keeping
    the curves of its own instances, and the metrics sync when computed, so every rank ends with
    the results of all instances."""
    rank, world_size = world()
    shard = UnrepeatedDistributedSampler(instances, num_replicas=world_size, rank=rank, shuffle=False)
    ids = instance_ids(instances)
    scored: ScoredCurves = {}
    for key in rank_zero_view([k for k in store.keys() if k.backbone == name]):
        saved = store.load(key)
        position = {int(i): n for n, i in enumerate(saved["index"])}
        missing = [i for i in ids if i not in position]
        if missing:
            log.warning("maps %s: %d instances have no map, not evaluated", key, len(missing))
            continue
        # instances whose finetuning failed (non-finite loss) have NaN maps: counted, not evaluated
        failed = saved.get("failed", torch.zeros(len(saved["index"]), dtype=torch.bool)).bool()
        members = [position[i] for i in ids]
        num_failed = int(failed[members].sum())
        if num_failed:
            log.warning("maps %s: %d instances failed (non-finite loss), evaluated without them", key, num_failed)
        if rank == 0:
            flag_degenerate(cfg, key, saved["maps"][members][~failed[members]], result)
        suite = PerturbationSuite(build_metrics(cfg.eval, explained))
        batches = loader(cfg, instances, cfg.eval.batch_size, sampler=shard)
        reused = total = 0
        for batch in track(batches, f"evaluate {key}"):
            rows = torch.tensor([position[int(i)] for i in batch["index"]])
            keep = ~failed[rows]
            if not keep.any():
                continue
            images, maps, labels = batch["image"][keep], saved["maps"][rows][keep], batch["label"][keep]
            masks = None if batch.get("mask") is None else batch["mask"][keep]
            indices = batch["index"][keep].tolist()
            reused += update_batch(suite, scored, indices, images, maps, labels, masks)
            total += len(images)
        log.info("maps %s: %d of %d images scored before, reused%s", key, reused, total,
                 f" (rank {rank}'s shard)" if world_size > 1 else "")
        values = {name: float(value) for name, value in suite.compute().items()}
        for metric_name, value in {**values, **({"failed": float(num_failed)} if num_failed else {})}.items():
            result.rows.append(dict(backbone=key.backbone, method=key.method, class_mode=key.class_mode,
                                    metric=metric_name, value=value))
        for metric_name, metric in suite.curve_metrics.items():
            result.curves[(key.backbone, key.method, key.class_mode, metric_name)] = metric.compute_curve().tolist()


def flag_degenerate(cfg: DictConfig, key: MapKey, maps: torch.Tensor, result: Evaluation) -> None:
    """Warn about, and keep for the report, the degenerate masks of an LTX variant's map set (the
    baselines' maps are not masks): the one definition `ltx explain` flags too."""
    if key.method not in explainer_methods(cfg):
        return
    fixes = {"mask_weight": f"loss.mask_weight (now {cfg.loss.mask_weight:g})",
             "pretrain": f"pretrain.epochs, now {cfg.pretrain.epochs}"}
    warning = degeneracy_warning(degenerate_masks(maps), fixes)
    if warning:
        log.warning("maps %s: %s", key, warning)
        result.degenerate[str(key)] = warning


def update_batch(suite: PerturbationSuite, scored: ScoredCurves, indices: list[int], images: torch.Tensor,
                 maps: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None) -> int:
    """Update the suite's metrics with one batch (instances `indices`), as `metric.update` on all of
    it would.

    Perturbation curves come from `scored` for the images whose map every perturbation metric has
    scored before; the others are scored together (POS and DEL, NEG and INS, a ROAD order's two
    share forward passes) and their curves added to `scored`. Each metric gets the batch's curves
    in batch order, so sums and per-image order are those of a full evaluation. Localization
    metrics (cheap) always compute. Returns how many images were reused."""
    keys = [(index, map_digest(saliency)) for index, saliency in zip(indices, maps)]
    names = suite.curve_metrics
    new = torch.tensor([not names or any((name, *k) not in scored for name in names) for k in keys])
    if names and new.any():
        fresh = [k for k, is_new in zip(keys, new.tolist()) if is_new]
        for name, curves in suite.curves(images[new], maps[new], labels[new]).items():
            scored.update({(name, *k): curve for k, curve in zip(fresh, curves)})
    curves = {name: torch.stack([scored[(name, *k)] for k in keys]) for name in names}
    suite.update(images, maps, labels, gt_masks=masks, curves=curves)
    return len(keys) - int(new.sum())


def map_digest(saliency: torch.Tensor) -> str:
    """A hash of one map's dtype, shape and bytes: equal digests, the same map bit for bit."""
    digest = hashlib.sha256(str((saliency.dtype, tuple(saliency.shape))).encode())
    digest.update(saliency.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def evaluate_and_report(cfg: DictConfig, models: dict[str, ExplainedModel], datamodule: L.LightningDataModule,
                        instances: Subset) -> Evaluation:
    """Evaluate all saved maps of the run directory; rank 0 writes results.csv, results.md and the figures."""
    run_dir = Path(cfg.paths.output_dir)
    store = MapStore(run_dir / "maps")
    result = Evaluation()
    writes = world()[0] == 0
    for name, explained in models.items():
        evaluate(cfg, store, name, explained, instances, result)
        if writes:
            write_results(run_dir / "results.csv", result.rows)
    result.rows += faithfulness_rows(result.rows)
    if not writes:
        return result
    write_results(run_dir / "results.csv", result.rows)
    accuracies = {}
    for name, explained in models.items():
        accuracies[name] = accuracy(cfg, explained, datamodule.test_set)
        log.info("black box %s: test accuracy %.2f%%", name, 100 * accuracies[name])
    validity = benchmark_validity(result.rows)
    for name, entry in validity.items():
        (log.info if entry["passed"] else log.warning)(describe(name, entry))
    info = {"blackbox_accuracy": accuracies, "benchmark_validity": validity, "unranked": unranked(cfg),
            "settings": {str(k): store.setting(k) for k in store.keys()},
            "degenerate_masks": result.degenerate}
    write_json(run_dir / "run_info.json", info)
    result.report = write_report(run_dir, result.rows, result.curves, info, store, instances, list(models),
                                 num_examples=cfg.explain.grid_images)
    log_results(make_loggers(cfg, "results"), run_dir, result.rows, result.curves, list(models))
    log.info("results written to %s", run_dir)
    return result


def sweep_metric(cfg: DictConfig, rows: list[dict[str, Any]]) -> float | None:
    """The value of `optimized_metric` in this run's results (what a sweeper optimises), or None."""
    key = cfg.get("optimized_metric")
    if not key:
        return None
    values = metric_values(rows)
    if key not in values:
        raise ValueError(f"optimized_metric={key} has no result in this run (was the method skipped for "
                         "every backbone?): choose one of the keys in results.csv.")
    log.info("optimized_metric %s = %.4f", key, values[key])
    return values[key]

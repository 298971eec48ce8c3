"""The stages of a run, in order, each reading and writing the run directory:

black boxes (trained once, cached) → explainer pretraining per class mode → maps of every method
→ evaluation → report. A stage whose output is already in the run directory is skipped, so a
killed run restarted with the same `hydra.run.dir` resumes where it stopped.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset, Subset
from torchmetrics import Metric

from ltx.data import seeded_subset
from ltx.lit.classifier import ClassifierModule
from ltx.lit.explain import ExplainModule
from ltx.lit.pretrain import PretrainModule
from ltx.masking import Masking
from ltx.metrics import create_metric
from ltx.metrics.perturbation import PERTURBATION_METRICS
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer
from ltx.models.zoo import WEIGHT_SOURCES, cache_key, create_network, load_weights, wrap
from ltx.methods.base import MethodNotApplicable
from ltx.report import write_report
from ltx.store import MapKey, MapStore, save_tensors, write_json, write_results

log = logging.getLogger(__name__)

LOADER_KEYS = ("batch_size", "num_workers", "_target_")


def make_trainer(cfg: DictConfig, **overrides: Any) -> L.Trainer:
    """A Trainer from the `trainer` group; stages add what is theirs (epochs, callbacks, logger)."""
    kwargs = {"logger": False, "enable_checkpointing": False, **overrides}
    return instantiate(cfg.trainer, **kwargs)


def make_loggers(cfg: DictConfig, name: str) -> list:
    return [instantiate(conf, **({"name": name} if "name" in conf else {})) for conf in cfg.get("logger", {}).values()]


def _loader(dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


# --- stage 1: the explained models ---------------------------------------------------------------

def ensure_blackbox(cfg: DictConfig, name: str, spec: DictConfig, datamodule: L.LightningDataModule) -> ExplainedModel:
    """The explained model `name`: loaded (hub / file), random, or trained on the data once and cached."""
    if spec.image_size != datamodule.image_size:
        raise ValueError(f"backbone {name} expects {spec.image_size}px images but data.image_size is "
                         f"{datamodule.image_size}: set data.image_size={spec.image_size}.")
    weights = str(spec.weights)
    network = create_network(spec.name, num_classes=datamodule.num_classes,
                             weights="random" if weights == "train" else weights, **spec.model_kwargs)
    explained = wrap(network, name=name, image_size=spec.image_size, mean=spec.mean, std=spec.std)
    if weights != "train":
        return explained
    if spec.get("train") is None:
        raise ValueError(f"backbone {name} has weights=train but no train recipe; choose weights from "
                         f"{WEIGHT_SOURCES} or a checkpoint path.")
    # The key covers the config, the architecture as built and the data as generated, so a code
    # change to either trains a new black box instead of silently reusing a stale one.
    data_id = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k not in LOADER_KEYS}
    first = datamodule.train_set[0]["image"]
    data_id.update({"class": cfg.data._target_, "fingerprint": f"{float(first.double().sum()):.6f}"})
    key = cache_key({**OmegaConf.to_container(spec, resolve=True), "architecture": repr(network)}, data_id)
    path = Path(cfg.paths.cache_dir) / "blackboxes" / f"{name}-{key}.safetensors"
    if path.is_file():
        log.info("black box %s: cached weights %s", name, path)
        load_weights(network, path)
        return explained
    log.info("black box %s: training on %s (%d epochs), will cache to %s", name, cfg.data._target_,
             spec.train.epochs, path)
    module = ClassifierModule(explained, lr=spec.train.lr, weight_decay=spec.train.weight_decay).train()
    train = _loader(datamodule.train_set, spec.train.batch_size, shuffle=True, seed=cfg.seed)
    val = _loader(datamodule.val_set, 256)
    make_trainer(cfg, max_epochs=spec.train.epochs).fit(module, train, val)
    explained.train(False).requires_grad_(False)
    save_tensors(path, network.state_dict(), metadata={"model": spec.name})
    return explained


@torch.no_grad()
def accuracy(explained: ExplainedModel, dataset: Dataset, batch_size: int = 256) -> float:
    hits = total = 0
    for batch in _loader(dataset, batch_size):
        hits += int((explained.predict(batch["image"]) == batch["label"]).sum())
        total += len(batch["label"])
    return hits / max(total, 1)


# --- stage 2: explainer pretraining ----------------------------------------------------------------

def pretrain_explainer(cfg: DictConfig, run_dir: Path, name: str, explained: ExplainedModel,
                       datamodule: L.LightningDataModule, class_mode: str) -> tuple[Explainer, Masking]:
    """Pretrain (or reload) the explainer of one backbone and class mode; the best epoch is kept."""
    explainer: Explainer = instantiate(cfg.explainer)(explained)
    masking: Masking = instantiate(cfg.masking)
    path = run_dir / "explainers" / name / f"{class_mode}.safetensors"
    holder = torch.nn.ModuleDict({"explainer": explainer, "masking": masking})
    if path.is_file():
        log.info("explainer %s/%s: reusing %s", name, class_mode, path)
        holder.load_state_dict(load_file(str(path)))
        return explainer, masking
    p = cfg.pretrain
    module = PretrainModule(explained, explainer, masking, instantiate(cfg.loss), class_mode=class_mode,
                            lr=p.lr, weight_decay=p.weight_decay, warmup_fraction=p.warmup_fraction,
                            val_pos=create_metric("pos", explained) if p.monitor == "val/pos" else None).train()
    per_class = p.get("per_class")
    train = seeded_subset(datamodule.train_set, num_samples=None if per_class else p.num_train,
                          per_class=per_class, seed=cfg.seed)
    val = seeded_subset(datamodule.val_set, num_samples=None if per_class else p.num_val,
                        per_class=per_class, seed=cfg.seed)
    ckpt_dir = run_dir / "checkpoints" / name / class_mode
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, monitor=p.monitor, mode="min", save_top_k=1, save_last=True,
                                 filename="best")
    trainer = make_trainer(cfg, max_epochs=p.epochs, callbacks=[checkpoint], enable_checkpointing=True,
                           logger=make_loggers(cfg, f"pretrain-{name}-{class_mode}"))
    last = ckpt_dir / "last.ckpt"
    trainer.fit(module, _loader(train, p.batch_size, shuffle=True, seed=cfg.seed), _loader(val, p.batch_size),
                ckpt_path=str(last) if last.is_file() else None)
    best = checkpoint.best_model_path or str(last)
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state, strict=False)
    log.info("explainer %s/%s: best epoch by %s from %s", name, class_mode, p.monitor, best)
    save_tensors(path, {k: v for k, v in holder.state_dict().items()})
    return explainer, masking


# --- stage 3: maps of every method ------------------------------------------------------------------

class MapWriter(BasePredictionWriter):
    """Writes each predicted batch as one shard as soon as it is done (incremental, resumable)."""

    def __init__(self, store: MapStore, key: MapKey, setting: str) -> None:
        super().__init__(write_interval="batch")
        self.store, self.key, self.setting = store, key, setting

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        self.store.write(self.key, prediction, rank=trainer.global_rank, setting=self.setting)


def instance_ids(dataset: Subset) -> list[int]:
    """The global instance index of each element (what batches carry as 'index'), without loading images."""
    base = dataset.dataset
    return [getattr(base, "offset", 0) + int(i) for i in dataset.indices]


def method_setting(method_cfg: DictConfig) -> str:
    """A method's knobs as one line ("steps=25 select_by=last"), recorded with its maps and results."""
    return " ".join(f"{k}={v}" for k, v in method_cfg.items() if not str(k).startswith("_"))


def build_method(method_cfg: DictConfig, context: dict[str, Any]) -> L.LightningModule:
    """Instantiate a method config with what it asks for from `context` (the explained model, the
    pretrained explainer, ...); plain methods are wrapped so they run under `trainer.predict` too."""
    factory: partial = instantiate(method_cfg)
    target = factory.func
    params = inspect.signature(target).parameters
    if isinstance(target, type) and issubclass(target, L.LightningModule):
        return factory(**{k: v for k, v in context.items() if k in params})
    method = factory(model=context["explained"])
    return ExplainModule(method, class_mode=context["class_mode"])


def explain_instances(cfg: DictConfig, store: MapStore, name: str, explained: ExplainedModel,
                      explainers: dict[str, tuple[Explainer, Masking]], instances: Subset) -> None:
    ids = instance_ids(instances)
    for method_name, method_cfg in cfg.method.items():
        if "_target_" not in method_cfg:
            log.warning("method.%s has settings but is not selected (no _target_): ignored", method_name)
            continue
        for class_mode in cfg.class_modes:
            key = MapKey(name, method_name, class_mode)
            done = store.done(key)
            todo = [i for i, idx in enumerate(ids) if idx not in done]
            if not todo:
                log.info("maps %s: all %d saved, skipping", key, len(ids))
                continue
            explainer, masking = explainers[class_mode]
            context = dict(explained=explained, explainer=explainer, masking=masking,
                           loss=instantiate(cfg.loss), class_mode=class_mode)
            try:
                module = build_method(method_cfg, context)
            except MethodNotApplicable as err:
                log.info("maps %s: skipped (%s)", key, err)
                break
            log.info("maps %s: %d instances (%d already saved)", key, len(todo), len(ids) - len(todo))
            writer = MapWriter(store, key, method_setting(method_cfg))
            trainer = make_trainer(cfg, callbacks=[writer], inference_mode=False)
            trainer.predict(module, _loader(Subset(instances, todo), cfg.explain.batch_size),
                            return_predictions=False)


# --- stage 4: evaluation ---------------------------------------------------------------------------

def build_metrics(eval_cfg: DictConfig, explained: ExplainedModel) -> dict[str, Metric]:
    """The suite's metrics for one explained model; `chunk_size` bounds each forward pass."""
    options = eval_cfg.get("options") or {}
    metrics = {}
    for name in eval_cfg.metrics:
        kwargs = dict(options.get(name, {}))
        if name in PERTURBATION_METRICS:
            kwargs.setdefault("chunk_size", eval_cfg.chunk_size)
        metrics[name] = create_metric(name, explained, **kwargs)
    return metrics


@dataclass
class Evaluation:
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: mean perturbation curves: (backbone, method, class_mode, metric) → values per step
    curves: dict[tuple[str, str, str, str], list[float]] = field(default_factory=dict)


def evaluate(cfg: DictConfig, store: MapStore, name: str, explained: ExplainedModel, instances: Subset,
             result: Evaluation) -> None:
    """Evaluate every saved map set of backbone `name` with the `eval` suite, into `result`."""
    for key in [k for k in store.keys() if k.backbone == name]:
        saved = store.load(key)
        position = {int(i): n for n, i in enumerate(saved["index"])}
        missing = [i for i in instance_ids(instances) if i not in position]
        if missing:
            log.warning("maps %s: %d instances have no map, not evaluated", key, len(missing))
            continue
        metrics = build_metrics(cfg.eval, explained)
        for batch in _loader(instances, cfg.eval.batch_size):
            maps = saved["maps"][torch.tensor([position[int(i)] for i in batch["index"]])]
            for metric in metrics.values():
                metric.update(batch["image"], maps, batch["label"], gt_masks=batch.get("mask"))
        for metric_name, metric in metrics.items():
            result.rows.append(dict(backbone=key.backbone, method=key.method, class_mode=key.class_mode,
                                    metric=metric_name, value=float(metric.compute())))
            if hasattr(metric, "compute_curve"):
                result.curves[(key.backbone, key.method, key.class_mode, metric_name)] = \
                    metric.compute_curve().tolist()


# --- the run ---------------------------------------------------------------------------------------

def prepare_data(cfg: DictConfig) -> tuple[L.LightningDataModule, Subset]:
    """The data module and the instances to explain (a seeded subset of `explain.split`)."""
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    split = {"train": datamodule.train_set, "val": datamodule.val_set, "test": datamodule.test_set}[cfg.explain.split]
    instances = seeded_subset(split, num_samples=min(cfg.explain.num_images, len(split)), seed=cfg.seed)
    return datamodule, instances


def evaluate_and_report(cfg: DictConfig, models: dict[str, ExplainedModel], datamodule: L.LightningDataModule,
                        instances: Subset) -> Evaluation:
    """Evaluate all saved maps of the run directory and write results.csv, results.md and the figures."""
    run_dir = Path(cfg.paths.output_dir)
    store = MapStore(run_dir / "maps")
    result = Evaluation()
    accuracies = {}
    for name, explained in models.items():
        accuracies[name] = accuracy(explained, datamodule.test_set)
        log.info("black box %s: test accuracy %.2f%%", name, 100 * accuracies[name])
        evaluate(cfg, store, name, explained, instances, result)
        write_results(run_dir / "results.csv", result.rows)
    info = {"blackbox_accuracy": accuracies, "settings": {str(k): store.setting(k) for k in store.keys()}}
    write_json(run_dir / "run_info.json", info)
    write_report(run_dir, result.rows, result.curves, info, store, instances, list(models),
                 num_examples=cfg.explain.grid_images)
    log.info("results written to %s", run_dir)
    return result


def run_pipeline(cfg: DictConfig) -> float | None:
    """All stages for every backbone; stages whose outputs exist in the run directory are skipped."""
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    datamodule, instances = prepare_data(cfg)
    models = {}
    for name, spec in cfg.backbone.items():
        explained = models[name] = ensure_blackbox(cfg, name, spec, datamodule)
        explainers = {mode: pretrain_explainer(cfg, run_dir, name, explained, datamodule, mode)
                      for mode in cfg.class_modes}
        explain_instances(cfg, MapStore(run_dir / "maps"), name, explained, explainers, instances)
    evaluate_and_report(cfg, models, datamodule, instances)
    return None


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
    datamodule, instances = prepare_data(cfg)
    models = {name: ensure_blackbox(cfg, name, spec, datamodule) for name, spec in cfg.backbone.items()}
    return evaluate_and_report(cfg, models, datamodule, instances)

"""The stages of a run, in order, each reading and writing the run directory:

black boxes (trained once, cached) → explainer pretraining per class mode → maps of every method
→ evaluation → report. A stage whose output is already in the run directory is skipped, so a
killed run restarted with the same `hydra.run.dir` resumes where it stopped; every stage seeds
itself (`seed_stage`), so the resumed run ends with the numbers of an uninterrupted one.

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

import hashlib
import inspect
import logging
import zlib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import BasePredictionWriter, EarlyStopping, ModelCheckpoint
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset
from torchmetrics import Metric

from ltx.data import seeded_subset
from ltx.lit import expected_lightning_warnings
from ltx.lit.classifier import ClassifierModule
from ltx.lit.explain import ExplainModule
from ltx.lit.pretrain import PretrainModule
from ltx.masking import Masking
from ltx.metrics import METRICS, create_metric
from ltx.metrics.perturbation import PERTURBATION_METRICS, PerturbationCurve
from ltx.metrics.suite import PerturbationSuite
from ltx.metrics.validity import FAITHFULNESS, benchmark_validity, describe, faithfulness_rows
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer
from ltx.models.zoo import WEIGHT_SOURCES, cache_key, create_network, load_weights, wrap
from ltx.methods.base import METHODS, MethodNotApplicable
from ltx.progress import track
from ltx.report import log_results, write_report
from ltx.store import (MapKey, MapStore, SavedMaps, metric_key_parts, metric_values, save_tensors, write_json,
                       write_results)

log = logging.getLogger(__name__)

LOADER_KEYS = ("batch_size", "num_workers", "_target_")
T = TypeVar("T")


class _DevicesOnce(logging.Filter):
    """Lightning announces the devices, and advertises a product, for every Trainer it builds; a
    run builds one per stage, method and class mode: say the devices once, skip the advert."""

    ANNOUNCEMENTS = ("GPU available", "TPU available", "HPU available")

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("💡 Tip"):
            return False
        if not message.startswith(self.ANNOUNCEMENTS):
            return True
        new = message not in self.seen
        self.seen.add(message)
        return new


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DevicesOnce())


def make_trainer(cfg: DictConfig, **overrides: Any) -> L.Trainer:
    """A Trainer from the `trainer` group; stages add what is theirs (epochs, callbacks, logger)."""
    kwargs = {"logger": False, "enable_checkpointing": False, **overrides}
    return instantiate(cfg.trainer, **kwargs)


def make_loggers(cfg: DictConfig, name: str) -> list:
    return [instantiate(conf, **({"name": name} if "name" in conf else {})) for conf in cfg.get("logger", {}).values()]


def _loader(dataset: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size)


def seed_stage(cfg: DictConfig, *names: str) -> int:
    """Seed every RNG for one stage from the run's seed and the stage's names: a stage's result then
    does not depend on which stages ran before it in this process or were reused from disk."""
    seed = (int(cfg.seed) * 1_000_003 + zlib.crc32("/".join(names).encode())) % 2**31
    L.seed_everything(seed, workers=True, verbose=False)
    return seed


def train_loader(trainer: L.Trainer, dataset: Dataset, batch_size: int, seed: int) -> DataLoader:
    """Shuffled batches of `batch_size` images in all, split over the trainer's processes.

    Epoch e visits DistributedSampler's permutation `randperm(n, seed + e)` for any number of
    processes W: one process gets a one-replica DistributedSampler; under DDP Lightning swaps the
    RandomSampler for a DistributedSampler seeded with PL_GLOBAL_SEED, which `seed_stage` sets to
    `seed`. Rank r's batch k is then every W-th image of the one-process batch k, and DDP's gradient
    average is the one-process gradient: the same training on 1 or W devices (n divisible by W).
    `batch_size` is a multiple of W (`check_processes`).
    """
    world_size = trainer.world_size
    if world_size == 1:
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    else:
        sampler = RandomSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size // world_size, sampler=sampler)


# --- processes --------------------------------------------------------------------------------------

def world() -> tuple[int, int]:
    """(rank, number of processes): (0, 1) without DDP and before the first distributed trainer call."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_zero_view(value: T) -> T:
    """Rank 0's `value` on every rank. What a stage finds saved decides which trainer calls it makes,
    and every rank must make the same calls (they synchronise), so rank 0's reading of the run
    directory is the one all ranks follow."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def check_processes(cfg: DictConfig, trainer: L.Trainer, num_instances: int) -> None:
    """Refuse, before any work, a process set-up the pipeline cannot run (see the module docstring)."""
    world_size = trainer.world_size
    if world_size == 1:
        return
    launcher = trainer.strategy.launcher
    if isinstance(launcher, _MultiProcessingLauncher):
        raise ValueError(f"trainer.strategy={cfg.trainer.get('strategy')} runs only the trainer calls in "
                         "its processes, but every stage of the pipeline runs on every rank: set "
                         "trainer.strategy=ddp.")
    relaunches = launcher is not None and not launcher.cluster_environment.creates_processes_externally
    if relaunches and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ValueError("trainer.strategy=ddp relaunches this command once per rank, which a Hydra "
                         "multirun cannot do: run each job on its own (python -m ltx.run ...) or use one "
                         "process per job.")
    if num_instances < world_size:
        raise ValueError(f"{num_instances} instances cannot be shared by {world_size} processes: set "
                         f"explain.num_images >= {world_size} or fewer trainer.devices.")
    for key in ("pretrain.batch_size", *(f"backbone.{name}.train.batch_size" for name in cfg.backbone)):
        value = OmegaConf.select(cfg, key)
        if value is not None and value % world_size:
            raise ValueError(f"{key}={value} is the batch in all, split over {world_size} processes: "
                             f"make it a multiple of {world_size}.")


def check_config(cfg: DictConfig) -> None:
    """What the stages cannot check before hours of work: the loss and masking settings (built once,
    cheaply, so a bad value fails now), `pretrain.explainer_from` is a backbone of the run, and
    `optimized_metric` names a result the run makes."""
    instantiate(cfg.loss), instantiate(cfg.masking)
    check_ground_truth(cfg)
    for name, conf in cfg.method.items():
        if "_target_" not in conf:
            log.warning("method.%s has settings but is not selected (no _target_): ignored", name)
    patience = cfg.pretrain.get("patience")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"pretrain.patience={patience}: give a number of epochs >= 1, or null to train "
                         f"every epoch (the paper).")
    source = cfg.pretrain.get("explainer_from")
    if source is not None and source not in cfg.backbone:
        raise ValueError(f"pretrain.explainer_from={source} is not a backbone of this run: choose one of "
                         f"{list(cfg.backbone)} or null.")
    key = cfg.get("optimized_metric")
    if not key:
        return
    parts = metric_key_parts(key)
    methods = [m for m, conf in cfg.method.items() if "_target_" in conf]
    choices = {"backbone": list(cfg.backbone), "method": methods, "class_mode": list(cfg.class_modes),
               "metric": list(cfg.eval.metrics) + ([FAITHFULNESS] if cfg.eval.get("references") else [])}
    for part, value in parts.items():
        if value is not None and value not in choices[part]:
            raise ValueError(f"optimized_metric={key}: {part} {value!r} is not in this run "
                             f"({choices[part]}).")


def check_ground_truth(cfg: DictConfig) -> None:
    """A localization metric, the oracle or the suite's references need ground-truth masks: refuse
    them, before any work, on data that has none."""
    if get_class(cfg.data._target_).has_masks:
        return
    wanted = [f"eval.metrics: {m}" for m in cfg.eval.metrics if not issubclass(METRICS[m], PerturbationCurve)]
    wanted += [f"method: {m}" for m, conf in cfg.method.items()
               if "mask" in getattr(get_class(conf.get("_target_", "builtins.object")), "needs", ())]
    wanted += [f"eval.references: {m}" for m in cfg.eval.get("references") or []]
    if wanted:
        raise ValueError(f"{', '.join(wanted)} need ground-truth masks, which data={cfg.data._target_} does not "
                         f"have: choose eval=paper (or another suite without them) and drop the oracle, or "
                         f"data with masks (data=shapes).")


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
    # The key covers the config (the train recipe and its augmentation included), what the training
    # code fixes, the architecture as built and the data as generated, so a change to any of them
    # trains a new black box instead of silently reusing a stale one.
    data_id = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k not in LOADER_KEYS}
    data_id.update({"class": cfg.data._target_, "fingerprint": data_fingerprint(datamodule.train_set)})
    key = cache_key({**OmegaConf.to_container(spec, resolve=True), "architecture": repr(network),
                     "recipe": ClassifierModule.RECIPE}, data_id)
    path = Path(cfg.paths.cache_dir) / "blackboxes" / f"{name}-{key}.safetensors"
    if rank_zero_view(path.is_file()):
        log.info("black box %s: cached weights %s", name, path)
        load_weights(network, path)
        return explained
    log.info("black box %s: training on %s (%d epochs), will cache to %s", name, cfg.data._target_,
             spec.train.epochs, path)
    seed = seed_stage(cfg, "blackbox", name)
    module = ClassifierModule(explained, lr=spec.train.lr, weight_decay=spec.train.weight_decay,
                              removal=spec.train.get("removal")).train()
    trainer = make_trainer(cfg, max_epochs=spec.train.epochs)
    with expected_lightning_warnings():
        trainer.fit(module, train_loader(trainer, datamodule.train_set, spec.train.batch_size, seed),
                    _loader(datamodule.val_set, 256))
    explained.train(False).requires_grad_(False)
    if trainer.is_global_zero:
        save_tensors(path, network.state_dict(), metadata={"model": spec.name})
    return explained


def data_fingerprint(dataset: Dataset, samples: int = 32) -> str:
    """A hash of the size, and of the pixels and labels of `samples` images spread over `dataset`."""
    digest = hashlib.sha256(str(len(dataset)).encode())
    for i in torch.linspace(0, len(dataset) - 1, min(samples, len(dataset))).long().unique().tolist():
        item = dataset[i]
        digest.update(item["image"].contiguous().numpy().tobytes())
        digest.update(str(int(item["label"])).encode())
    return digest.hexdigest()[:16]


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
    """Pretrain (or reload) the explainer of one backbone and class mode; the best epoch is kept.
    `pretrain.epochs=0` keeps the explainer as initialised (the no-pretraining ablation);
    `pretrain.patience` stops once the monitored value has not improved for that many epochs."""
    seed = seed_stage(cfg, "pretrain", name, class_mode)
    explainer: Explainer = instantiate(cfg.explainer)(explained)
    masking: Masking = instantiate(cfg.masking)
    path = run_dir / "explainers" / name / f"{class_mode}.safetensors"
    holder = torch.nn.ModuleDict({"explainer": explainer, "masking": masking})
    ckpt_dir = run_dir / "checkpoints" / name / class_mode
    last = ckpt_dir / "last.ckpt"
    saved, resumable = rank_zero_view((path.is_file(), last.is_file()))
    if saved:
        log.info("explainer %s/%s: reusing %s", name, class_mode, path)
        holder.load_state_dict(load_file(str(path)))
        return explainer, masking
    p = cfg.pretrain
    if p.epochs == 0:
        log.info("explainer %s/%s: not pretrained (pretrain.epochs=0), finetuned from its initialisation",
                 name, class_mode)
    else:
        module = PretrainModule(explained, explainer, masking, instantiate(cfg.loss), class_mode=class_mode,
                                lr=p.lr, weight_decay=p.weight_decay, warmup_fraction=p.warmup_fraction,
                                val_pos=create_metric("pos", explained) if p.monitor == "val/pos" else None
                                ).train()
        per_class = p.get("per_class")
        train = seeded_subset(datamodule.train_set, num_samples=None if per_class else p.num_train,
                              per_class=per_class, seed=cfg.seed)
        val = seeded_subset(datamodule.val_set, num_samples=None if per_class else p.num_val,
                            per_class=per_class, seed=cfg.seed)
        checkpoint = ModelCheckpoint(dirpath=ckpt_dir, monitor=p.monitor, mode="min", save_top_k=1, filename="best")
        # every epoch, to resume from (`save_last` writes only when the best improves)
        latest = ModelCheckpoint(dirpath=ckpt_dir, filename=last.stem, enable_version_counter=False)
        # the schedule stays that of p.epochs, so stopping early keeps exactly the checkpoint a full
        # run keeps unless a later epoch would have beaten it
        callbacks = [checkpoint, latest]
        if p.get("patience") is not None:
            callbacks.append(EarlyStopping(monitor=p.monitor, mode="min", patience=p.patience, verbose=True))
        trainer = make_trainer(cfg, max_epochs=p.epochs, callbacks=callbacks, enable_checkpointing=True,
                               logger=make_loggers(cfg, f"pretrain-{name}-{class_mode}"))
        with expected_lightning_warnings():
            trainer.fit(module, train_loader(trainer, train, p.batch_size, seed), _loader(val, p.batch_size),
                        ckpt_path=str(last) if resumable else None)
        best = rank_zero_view(checkpoint.best_model_path or str(last))
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"],
                               strict=False)
        log.info("explainer %s/%s: best epoch by %s from %s", name, class_mode, p.monitor, best)
    if world()[0] == 0:
        save_tensors(path, holder.state_dict())
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
    return ExplainModule(method, class_mode=context["class_mode"], reuse=context.get("reuse"))


def run_methods(cfg: DictConfig) -> dict[str, DictConfig]:
    """The methods whose maps a run makes: those selected in `method`, then the suite's references
    (`eval.references`: the oracle and random maps on data with ground truth) not among them,
    with their registered defaults."""
    methods = {name: conf for name, conf in cfg.method.items() if "_target_" in conf}
    for name in cfg.eval.get("references") or []:
        if name not in methods:
            cls = METHODS[name]
            methods[name] = OmegaConf.create({"_target_": f"{cls.__module__}.{cls.__qualname__}", "_partial_": True})
    return methods


def unranked(cfg: DictConfig) -> dict[str, str]:
    """Methods the report shows but never ranks, with the reason: the oracle, and any LTX variant
    that selects its map with an evaluation metric (the official code's `select_by=pos`)."""
    reasons = {}
    for name, conf in run_methods(cfg).items():
        if getattr(get_class(conf._target_), "needs", ()):
            reasons[name] = "reference: uses the ground truth"
        elif conf.get("select_by") in PERTURBATION_METRICS:
            reasons[name] = f"selects its map with the {conf.select_by.upper()} test it is scored on"
    return reasons


def explain_instances(cfg: DictConfig, store: MapStore, name: str, explained: ExplainedModel,
                      explainers: dict[str, tuple[Explainer, Masking]], instances: Subset) -> None:
    ids = instance_ids(instances)
    for method_name, method_cfg in run_methods(cfg).items():
        for class_mode in cfg.class_modes:
            key = MapKey(name, method_name, class_mode)
            done = rank_zero_view(store.done(key))
            todo = [i for i, idx in enumerate(ids) if idx not in done]
            if not todo:
                log.info("maps %s: all %d saved, skipping", key, len(ids))
                continue
            explainer, masking = explainers[class_mode]
            setting = method_setting(method_cfg)
            # saved maps of another class mode made with the same settings (used where the class is the same)
            other = next((MapKey(name, method_name, mode) for mode in cfg.class_modes if mode != class_mode
                          and store.setting(MapKey(name, method_name, mode)) == setting), None)
            context = dict(explained=explained, explainer=explainer, masking=masking,
                           loss=instantiate(cfg.loss), class_mode=class_mode,
                           reuse=None if other is None else SavedMaps(store, other))
            try:
                module = build_method(method_cfg, context)
            except MethodNotApplicable as err:
                log.info("maps %s: skipped (%s)", key, err)
                break
            log.info("maps %s: %d instances (%d already saved)", key, len(todo), len(ids) - len(todo))
            seed_stage(cfg, "explain", str(key))
            writer = MapWriter(store, key, setting)
            trainer = make_trainer(cfg, callbacks=[writer], inference_mode=False)
            # Lightning's unrepeated sampler needs an instance per rank: a resumed run with fewer
            # left than ranks redoes a few saved ones (MapStore.load keeps one map per index).
            todo += [i for i, idx in enumerate(ids) if idx in done][:max(trainer.world_size - len(todo), 0)]
            with expected_lightning_warnings():
                trainer.predict(module, _loader(Subset(instances, todo), cfg.explain.batch_size),
                                return_predictions=False)
            if getattr(module, "reused", 0):
                log.info("maps %s: %d maps reused from %s (same class explained)", key, module.reused, other)


# --- stage 4: evaluation ---------------------------------------------------------------------------

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
        num_failed = int(failed[[position[i] for i in ids]].sum())
        if num_failed:
            log.warning("maps %s: %d instances failed (non-finite loss), evaluated without them", key, num_failed)
        metrics = build_metrics(cfg.eval, explained)
        batches = DataLoader(instances, batch_size=cfg.eval.batch_size, sampler=shard)
        reused = total = 0
        for batch in track(batches, f"evaluate {key}"):
            rows = torch.tensor([position[int(i)] for i in batch["index"]])
            keep = ~failed[rows]
            if not keep.any():
                continue
            images, maps, labels = batch["image"][keep], saved["maps"][rows][keep], batch["label"][keep]
            masks = None if batch.get("mask") is None else batch["mask"][keep]
            indices = batch["index"][keep].tolist()
            reused += update_batch(metrics, scored, indices, images, maps, labels, masks)
            total += len(images)
        log.info("maps %s: %d of %d images scored before, reused%s", key, reused, total,
                 f" (rank {rank}'s shard)" if world_size > 1 else "")
        values = {name: float(metric.compute()) for name, metric in metrics.items()}
        for metric_name, value in {**values, **({"failed": float(num_failed)} if num_failed else {})}.items():
            result.rows.append(dict(backbone=key.backbone, method=key.method, class_mode=key.class_mode,
                                    metric=metric_name, value=value))
        for metric_name, metric in metrics.items():
            if hasattr(metric, "compute_curve"):
                result.curves[(key.backbone, key.method, key.class_mode, metric_name)] = \
                    metric.compute_curve().tolist()


def update_batch(metrics: dict[str, Metric], scored: ScoredCurves, indices: list[int], images: torch.Tensor,
                 maps: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None) -> int:
    """Update `metrics` with one batch (instances `indices`), as `metric.update` on all of it would.

    Perturbation curves come from `scored` for the images whose map every perturbation metric has
    scored before; the others are scored together (a `PerturbationSuite`: POS and DEL, NEG and INS,
    a ROAD order's two share forward passes) and their curves added to `scored`. Each metric gets
    the batch's curves in batch order, so sums and per-image order are those of a full evaluation.
    Localization metrics (cheap) always compute. Returns how many images were reused."""
    suite = PerturbationSuite(metrics)
    keys = [(index, map_digest(saliency)) for index, saliency in zip(indices, maps)]
    names = suite.curve_metrics
    new = torch.tensor([not names or any((name, *k) not in scored for name in names) for k in keys])
    if suite.curve_metrics and new.any():
        fresh = [k for k, is_new in zip(keys, new.tolist()) if is_new]
        for name, curves in suite.curves(images[new], maps[new], labels[new]).items():
            scored.update({(name, *k): curve for k, curve in zip(fresh, curves)})
    curves = {name: torch.stack([scored[(name, *k)] for k in keys]) for name in suite.curve_metrics}
    suite.update(images, maps, labels, gt_masks=masks, curves=curves)
    return len(keys) - int(new.sum())


def map_digest(saliency: torch.Tensor) -> str:
    """A hash of one map's dtype, shape and bytes: equal digests, the same map bit for bit."""
    digest = hashlib.sha256(str((saliency.dtype, tuple(saliency.shape))).encode())
    digest.update(saliency.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
        accuracies[name] = accuracy(explained, datamodule.test_set)
        log.info("black box %s: test accuracy %.2f%%", name, 100 * accuracies[name])
    validity = benchmark_validity(result.rows)
    for name, entry in validity.items():
        (log.info if entry["passed"] else log.warning)(describe(name, entry))
    info = {"blackbox_accuracy": accuracies, "benchmark_validity": validity, "unranked": unranked(cfg),
            "settings": {str(k): store.setting(k) for k in store.keys()}}
    write_json(run_dir / "run_info.json", info)
    write_report(run_dir, result.rows, result.curves, info, store, instances, list(models),
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


def run_pipeline(cfg: DictConfig) -> float | None:
    """All stages for every backbone; stages whose outputs exist in the run directory are skipped.
    Returns `optimized_metric` (None when not set)."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    datamodule, instances = prepare_data(cfg)
    check_processes(cfg, make_trainer(cfg), len(instances))
    models = {name: ensure_blackbox(cfg, name, spec, datamodule) for name, spec in cfg.backbone.items()}
    store = MapStore(run_dir / "maps")
    pretrained: dict[str, dict[str, tuple[Explainer, Masking]]] = {}
    # only LTX (a LightningModule method) needs pretrained explainers
    needs_explainers = any(issubclass(get_class(conf._target_), L.LightningModule)
                           for conf in run_methods(cfg).values())
    if not needs_explainers:
        log.info("no selected method needs a pretrained explainer: pretraining skipped")
    for name, explained in models.items():
        # cross-architecture: every backbone explained by the explainer pretrained on `explainer_from`
        origin = cfg.pretrain.get("explainer_from") or name
        if not needs_explainers:
            pretrained[origin] = dict.fromkeys(cfg.class_modes, (None, None))
        elif origin not in pretrained:
            pretrained[origin] = {
                mode: pretrain_explainer(cfg, run_dir, origin, models[origin], datamodule, mode)
                for mode in cfg.class_modes}
        explain_instances(cfg, store, name, explained, pretrained[origin], instances)
    barrier()  # every rank's maps are on disk before any rank reads them
    return sweep_metric(cfg, evaluate_and_report(cfg, models, datamodule, instances).rows)


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

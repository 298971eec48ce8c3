"""Stage 3, the maps: every method of the run (`run_methods`), for every backbone and class mode,
under `trainer.predict` through the one adapter (`ExplainModule`), each batch written as a shard as
soon as it is done (`MapWriter`), so an interrupted run resumes with the instances left."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import BasePredictionWriter
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Subset

from ltx.classes import is_contrastive
from ltx.data import instance_ids
from ltx.lit import expected_lightning_warnings
from ltx.lit.explain import ExplainModule
from ltx.masking import Masking
from ltx.methods.base import METHODS, Method, MethodNotApplicable
from ltx.metrics import PERTURBATION_METRICS
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer
from ltx.progress import work_bar
from ltx.stages.runtime import loader, make_trainer, rank_zero_view, seed_stage
from ltx.store import MapKey, MapStore, SavedMaps

log = logging.getLogger(__name__)


class MapWriter(BasePredictionWriter):
    """Writes each predicted batch as one shard as soon as it is done (incremental, resumable)."""

    def __init__(self, store: MapStore, key: MapKey, setting: str) -> None:
        super().__init__(write_interval="batch")
        self.store, self.key, self.setting = store, key, setting

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        self.store.write(self.key, prediction, rank=trainer.global_rank, setting=self.setting)


def method_setting(method_cfg: DictConfig) -> str:
    """A method's knobs as one line ("steps=25 select_by=last"), recorded with its maps and results."""
    return " ".join(f"{k}={v}" for k, v in method_cfg.items() if not str(k).startswith("_"))


def build_method(method_cfg: DictConfig, explained: ExplainedModel, explainer: Explainer | None,
                 masking: Masking | None, loss_cfg: DictConfig) -> Method:
    """A method config instantiated for `explained`; a method that `uses_explainer` (LTX) also gets the
    pretrained explainer of the class mode, its masking and the loss."""
    parts = {}
    if get_class(method_cfg._target_).uses_explainer:
        parts = dict(explainer=explainer, masking=masking, loss=instantiate(loss_cfg))
    return instantiate(method_cfg)(model=explained, **parts)


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


@contextmanager
def showing_work(method: Method, description: str, num_images: int, enabled: bool) -> Iterator[None]:
    """A progress bar over `method.work(num_images)` units, advanced by the method as it works."""
    if not enabled:
        yield
        return
    with work_bar(method.work(num_images) or 0, description) as advance:
        method.progress = advance
        try:
            yield
        finally:
            method.progress = None


def explain_instances(cfg: DictConfig, store: MapStore, name: str, explained: ExplainedModel,
                      explainers: dict[str, tuple[Explainer, Masking]], instances: Subset) -> None:
    ids = instance_ids(instances)
    for method_name, method_cfg in run_methods(cfg).items():
        for class_mode in cfg.class_modes:
            key = MapKey(name, method_name, class_mode)
            try:
                get_class(method_cfg._target_).check_class_mode(class_mode)
            except MethodNotApplicable as err:
                log.info("maps %s: skipped (%s)", key, err)
                continue
            done = rank_zero_view(store.done(key))
            todo = [i for i, idx in enumerate(ids) if idx not in done]
            if not todo:
                log.info("maps %s: all %d saved, skipping", key, len(ids))
                continue
            try:
                method = build_method(method_cfg, explained, *explainers[class_mode], cfg.loss)
            except MethodNotApplicable as err:
                log.info("maps %s: skipped (%s)", key, err)
                break
            setting = method_setting(method_cfg)
            # saved maps of another class mode made with the same settings (used where the class, or the
            # pair of a contrastive mode, is the same)
            other = next((MapKey(name, method_name, mode) for mode in cfg.class_modes if mode != class_mode
                          and is_contrastive(mode) == is_contrastive(class_mode)
                          and store.setting(MapKey(name, method_name, mode)) == setting), None)
            reuse = SavedMaps(store, other) if other and method.reuse_across_class_modes else None
            module = ExplainModule(method, class_mode=class_mode, contrast=cfg.get("contrast_class"),
                                   reuse=reuse)
            log.info("maps %s: %d instances (%d already saved)", key, len(todo), len(ids) - len(todo))
            seed_stage(cfg, "explain", str(key))
            writer = MapWriter(store, key, setting)
            bars = cfg.trainer.get("enable_progress_bar", True)
            own_bar = bars and method.work(len(todo)) is not None  # e.g. LTX: steps, not batches
            trainer = make_trainer(cfg, callbacks=[writer], inference_mode=False,
                                   enable_progress_bar=bars and not own_bar)
            # Lightning's unrepeated sampler needs an instance per rank: a resumed run with fewer
            # left than ranks redoes a few saved ones (MapStore.load keeps one map per index).
            todo += [i for i, idx in enumerate(ids) if idx in done][:max(trainer.world_size - len(todo), 0)]
            share = -(-len(todo) // trainer.world_size)  # this process's instances (the bar is the first's)
            with expected_lightning_warnings(), showing_work(method, f"maps {key}", share, own_bar):
                trainer.predict(module, loader(cfg, Subset(instances, todo), cfg.explain.batch_size),
                                return_predictions=False)
            if module.reused:
                log.info("maps %s: %d maps reused from %s (same class explained)", key, module.reused, other)

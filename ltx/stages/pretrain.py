"""Stage 2, explainer pretraining: one explainer per backbone and class mode, trained with the LTX
loss on `pretrain.num_train` images (paper: 2,000), the best epoch by `pretrain.monitor` kept.

The module and its optimiser come from `pretrain.module` (conf/pretrain/), the trainer's callbacks
from the `callbacks` group (conf/callbacks/), as in lightning-hydra-template. `pretrain_module` is
the one place where they are built: the run's stage and `ltx explain` (which counts steps instead
of epochs) both build their module there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig
from safetensors.torch import load_file
from torch.utils.data import Dataset, Subset

from ltx.classes import is_contrastive
from ltx.data import seeded_subset
from ltx.lit import expected_lightning_warnings
from ltx.lit.pretrain import PretrainModule
from ltx.losses import LTXLoss
from ltx.masking import Masking
from ltx.metrics import create_metric
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer
from ltx.stages.explain import run_methods
from ltx.stages.runtime import (
    loader,
    make_loggers,
    make_trainer,
    rank_zero_view,
    seed_stage,
    train_loader,
    world,
)
from ltx.store import save_tensors

log = logging.getLogger(__name__)


def explainer_methods(cfg: DictConfig) -> dict[str, DictConfig]:
    """The run's methods built on a pretrained explainer (`Method.uses_explainer`: the LTX variants).
    Explainers are pretrained for them alone: a run of baselines trains none."""
    return {name: conf for name, conf in run_methods(cfg).items() if get_class(conf._target_).uses_explainer}


def pretraining_plan(cfg: DictConfig) -> list[str]:
    """The methods that need pretraining (none: nothing is pretrained), said in the log with the reason,
    so that a run's time spent, or not spent, on pretraining is never a surprise."""
    users = list(explainer_methods(cfg))
    if users:
        origins = dict.fromkeys(cfg.pretrain.get("explainer_from") or name for name in cfg.backbone)
        log.info("pretraining: an explainer per class mode (%s) of %s, for %s (built on a pretrained explainer)",
                 ", ".join(cfg.class_modes), ", ".join(origins), ", ".join(users))
    else:
        log.info("pretraining: none, no method of this run is built on a pretrained explainer (%s; the LTX "
                 "variants are)", ", ".join(run_methods(cfg)))
    return users


def new_explainer(cfg: DictConfig, explained: ExplainedModel) -> tuple[Explainer, Masking, torch.nn.ModuleDict]:
    """A fresh explainer and masking for `explained` from the `explainer` and `masking` groups, and the
    module whose state dict is an explainer file (`explainer.*`, `masking.*`: a learned baseline is
    part of what pretraining learns)."""
    explainer: Explainer = instantiate(cfg.explainer)(explained)
    masking: Masking = instantiate(cfg.masking)
    return explainer, masking, torch.nn.ModuleDict({"explainer": explainer, "masking": masking})


def pretrain_module(cfg: DictConfig, explained: ExplainedModel, explainer: Explainer, masking: Masking,
                    loss: LTXLoss, class_mode: str, *, validate: bool) -> PretrainModule:
    """`pretrain.module` for this explainer; `validate`: with the POS checkpoint criterion when
    `pretrain.monitor` is val/pos (in a contrastive class mode, the contrastive POS: c against c′)."""
    contrast = cfg.get("contrast_class")
    val_pos = None
    if validate and cfg.pretrain.monitor == "val/pos":
        val_pos = (create_metric("contrastive_pos", explained, contrast=contrast) if is_contrastive(class_mode)
                   else create_metric("pos", explained))
    module = instantiate(cfg.pretrain.module)(explained, explainer, masking, loss, class_mode=class_mode,
                                              contrast=contrast, val_pos=val_pos)
    return module.train()


def pretrain_callbacks(cfg: DictConfig, ckpt_dir: Path) -> dict[str, Callback]:
    """The `callbacks` group's callbacks, checkpoints written to `ckpt_dir`; early stopping only with
    `pretrain.patience`."""
    callbacks = {}
    for name, conf in cfg.callbacks.items():
        if name == "early_stopping" and cfg.pretrain.get("patience") is None:
            continue
        target = get_class(conf._target_)
        callbacks[name] = instantiate(conf, dirpath=str(ckpt_dir)) if issubclass(target, ModelCheckpoint) \
            else instantiate(conf)
    missing = [name for name in ("best", "last") if not isinstance(callbacks.get(name), ModelCheckpoint)]
    if missing:
        raise ValueError(f"callbacks.{missing[0]} must be a ModelCheckpoint: pretraining keeps the best "
                         "checkpoint and resumes from the last (conf/callbacks/default.yaml).")
    return callbacks


def pretraining_images(cfg: DictConfig, dataset: Dataset, count: str) -> Subset:
    """A seeded subset of `dataset`: `pretrain.per_class` images of every class (the paper), else
    `pretrain.<count>` images, or all of a smaller split (a user's own folder) with a warning."""
    per_class = cfg.pretrain.get("per_class")
    if per_class:
        return seeded_subset(dataset, per_class=per_class, seed=cfg.seed)
    wanted = cfg.pretrain[count]
    if wanted > len(dataset):
        log.warning("pretrain.%s=%d is more than the split's %d images: using all of them", count, wanted,
                    len(dataset))
    return seeded_subset(dataset, num_samples=min(wanted, len(dataset)), seed=cfg.seed)


def pretrain_explainer(cfg: DictConfig, run_dir: Path, name: str, explained: ExplainedModel,
                       datamodule: L.LightningDataModule, class_mode: str) -> tuple[Explainer, Masking]:
    """Pretrain (or reload) the explainer of one backbone and class mode; the best epoch is kept.
    `pretrain.epochs=0` keeps the explainer as initialised (the no-pretraining ablation);
    `pretrain.patience` stops once the monitored value has not improved for that many epochs."""
    seed = seed_stage(cfg, "pretrain", name, class_mode)
    explainer, masking, holder = new_explainer(cfg, explained)
    path = run_dir / "explainers" / name / f"{class_mode}.safetensors"
    ckpt_dir = run_dir / "checkpoints" / name / class_mode
    last = ckpt_dir / f"{cfg.callbacks.last.filename}.ckpt"
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
        module = pretrain_module(cfg, explained, explainer, masking, instantiate(cfg.loss), class_mode, validate=True)
        train = pretraining_images(cfg, datamodule.train_set, "num_train")
        val = pretraining_images(cfg, datamodule.val_set, "num_val")
        # the schedule stays that of p.epochs, so stopping early keeps exactly the checkpoint a full
        # run keeps unless a later epoch would have beaten it
        callbacks = pretrain_callbacks(cfg, ckpt_dir)
        trainer = make_trainer(cfg, max_epochs=p.epochs, callbacks=list(callbacks.values()),
                               enable_checkpointing=True, logger=make_loggers(cfg, f"pretrain-{name}-{class_mode}"))
        with expected_lightning_warnings():
            trainer.fit(module, train_loader(cfg, trainer, train, p.batch_size, seed),
                        loader(cfg, val, p.batch_size), ckpt_path=str(last) if resumable else None)
        best = rank_zero_view(callbacks["best"].best_model_path or str(last))
        module.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"],
                               strict=False)
        log.info("explainer %s/%s: best epoch by %s from %s", name, class_mode, p.monitor, best)
    if world()[0] == 0:
        save_tensors(path, holder.state_dict())
    return explainer, masking

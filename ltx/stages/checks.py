"""Before any stage: refuse, with a one-line fix, what the config asks for but the run cannot give
(a GPU trainer where no GPU is visible, settings that fail at once when built, references without
ground truth, an override that would not reach every LTX variant, an `optimized_metric` the run does
not make)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from ltx.classes import check_class_mode
from ltx.metrics import METRICS
from ltx.metrics.perturbation import PerturbationCurve
from ltx.metrics.validity import FAITHFULNESS
from ltx.stages.pretrain import explainer_methods, pretrain_callbacks
from ltx.store import metric_key_parts

log = logging.getLogger(__name__)


def check_config(cfg: DictConfig) -> None:
    """What the stages cannot check before hours of work: the class modes and the contrast class, the
    loss, masking and callback settings (built once, cheaply, so a bad value fails now),
    `pretrain.explainer_from` is a backbone of the run, and `optimized_metric` names a result the run
    makes."""
    check_accelerator(cfg)
    for class_mode in cfg.class_modes:
        check_class_mode(class_mode)
    contrast = cfg.get("contrast_class")
    if contrast is not None and (not isinstance(contrast, int) or contrast < 0):
        raise ValueError(f"contrast_class={contrast}: give a class index (>= 0), or null for f's runner-up.")
    instantiate(cfg.loss), instantiate(cfg.masking)
    check_ground_truth(cfg)
    for name, conf in cfg.method.items():
        if "_target_" not in conf:
            log.warning("method.%s has settings but is not selected (no _target_): ignored", name)
    check_finetune_overrides(cfg)
    patience = cfg.pretrain.get("patience")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"pretrain.patience={patience}: give a number of epochs >= 1, or null to train "
                         f"every epoch (the paper).")
    pretrain_callbacks(cfg, Path("checkpoints"))  # built once: a bad entry fails now
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


def check_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer (trainer=gpu, trainer=ddp) where torch sees no GPU would fail inside Lightning
    ("No supported gpu backend found!", wrapped by Hydra): say so, and what to choose instead."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    visible = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    visible["gpu"] = visible["cuda"] or visible["mps"]
    if not visible.get(accelerator, True):
        raise ValueError(f"trainer.accelerator={accelerator}, but no GPU is visible on this machine: use "
                         f"trainer=cpu (trainer=ddp_cpu for several processes).")


def check_finetune_overrides(cfg: DictConfig) -> None:
    """Every LTX variant reads how finetuning runs from `finetune` (conf/finetune/): refuse an
    override of one variant's copy while another variant of the run still reads the shared one,
    since the override would silently not reach it."""
    variants = explainer_methods(cfg)
    for key in cfg.get("finetune") or {}:
        shared = [name for name, conf in variants.items() if OmegaConf.is_interpolation(conf, key)]
        own = [name for name, conf in variants.items() if key in conf and name not in shared]
        if shared and own:
            value = cfg.method[own[0]][key]
            raise ValueError(f"method.{own[0]}.{key}={value} reaches {', '.join(own)} only, while {', '.join(shared)} "
                             f"take finetune.{key}: set finetune.{key}={value} to reach every LTX variant, or "
                             f"method.NAME.{key} for each of them.")


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
        oracle = " and drop the oracle from method" if any(w.startswith("method") for w in wanted) else ""
        raise ValueError(f"{', '.join(wanted)} need ground-truth masks, which data={cfg.data._target_} does not "
                         f"have: choose eval=paper (or another suite without them){oracle}, or data with "
                         f"masks (data=textures or shapes).")

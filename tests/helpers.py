"""Helpers shared by tests: tiny explained models with random weights, the real config shrunk."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ltx.models.explained import ExplainedModel
from ltx.models.zoo import create_network, wrap

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def tiny_explained(name: str, seed: int = 0) -> ExplainedModel:
    torch.manual_seed(seed)
    return wrap(create_network(name, num_classes=8), name=name, image_size=64)


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides or [], return_hydra_config=True)


# Overrides that shrink the embedded default to seconds (used by the end-to-end tests).
TINY = [
    "data.train_size=512", "data.val_size=128", "data.test_size=64",
    "backbone.textures_vit.train.epochs=1", "backbone.textures_resnet.train.epochs=1",
    "pretrain.num_train=64", "pretrain.num_val=32", "pretrain.epochs=1", "pretrain.batch_size=32",
    "explain.num_images=8", "explain.batch_size=4", "explain.grid_images=2",
    # LTX three ways, a gradient baseline, a ViT-only one (skipped on the CNN), random: each baseline
    # has its own unit tests, this checks the run wires every kind.
    "method=[ltx,ltx_sel,ltx_pretrained,gradcam,rollout,random]",
    "method.ltx.steps=2", "method.ltx_sel.steps=2", "trainer.enable_progress_bar=false",
]

# The smallest end-to-end run (the sweep, DDP and resume tests): the ViT alone, one class mode, LTX
# with one step, the paper's suite, 4 instances.
TINY_VIT = [a for a in TINY if not a.startswith(("backbone.textures_resnet", "method", "explain."))] + [
    "backbone=textures_vit", "class_modes=[predicted]", "method=[ltx]", "method.ltx.steps=1", "eval=paper",
    "explain.num_images=4", "explain.batch_size=4", "explain.grid_images=1", "logger=[]",
]


def tiny_vit(*overrides: str) -> list[str]:
    """TINY_VIT with `overrides` in place of its own values for the same keys."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [o for o in TINY_VIT if o.split("=", 1)[0] not in keys] + list(overrides)


class Killed(RuntimeError):
    """Stands for the process being killed (raised from a patched hook by the resume tests)."""

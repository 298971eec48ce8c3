"""Helpers shared by tests: tiny explained models with random weights, the real config shrunk."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

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


#: the class of a `square_folder` image: the colour of its one square
SQUARE_COLOURS = {"red": (230, 30, 30), "green": (30, 200, 30), "magenta": (220, 40, 220),
                  "yellow": (230, 220, 30)}


def square_folder(root: Path, *, size: int, per_class: dict[str, int], seed: int = 0) -> Path:
    """A user's ImageFolder (`root/<split>/<class>/*.png`, `per_class` images of each class per split) at
    `size` px: a coloured square (the class) and a grey one on grey noise, so that the evidence is
    one region of the image and a few seconds of training learn it."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for name, colour in SQUARE_COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                # grey noise or, for one image in two, black (so that a blackened image is no class)
                pixels = rng.integers(60, 190, (size, size, 1)).repeat(3, axis=2) * int(rng.random() < 0.5)
                for fill in (colour, (int(rng.integers(60, 190)),) * 3):
                    side = int(rng.integers(size // 4, size // 3 + 1))
                    y, x = rng.integers(0, size - side, 2)
                    pixels[y:y + side, x:x + side] = fill
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}_{i}.png")
    return root


def own_preprocessing(paths: Sequence[Path], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Images as a user's plain PyTorch code feeds them to their model (ToTensor, Normalize), no resizing."""
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255 for p in paths])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def train_own_classifier(name: str, folder: Path, *, mean: Sequence[float], std: Sequence[float],
                         epochs: int = 3, lr: float = 3e-3, seed: int = 0, **model_kwargs) -> torch.nn.Module:
    """A timm model trained as a user would, with plain PyTorch on their own preprocessing (a few seconds
    on one thread for the test models); returned in eval mode."""
    import timm

    torch.manual_seed(seed)
    paths = sorted(folder.rglob("*.png"))
    labels = torch.tensor([sorted(SQUARE_COLOURS).index(p.parent.name) for p in paths])
    images = own_preprocessing(paths, mean, std)
    model = timm.create_model(name, num_classes=len(SQUARE_COLOURS), **model_kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(epochs):
        for batch in torch.randperm(len(paths)).split(32):
            loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()

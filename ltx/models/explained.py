"""The explained model f: a frozen black box that takes images in [0, 1] pixel space.

Normalisation lives inside the wrapper so that masking (ψ) and the perturbation metrics work in
pixel space, as the paper does: "set to 0" means black, whatever the model's mean and std are.
LTX only ever uses f's outputs and their gradients w.r.t. the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ltx.classes import CLASS_MODES, check_class_mode, contrast_pairs


def model_family(model: nn.Module) -> str:
    """'vit' for token models with a patch embedding (timm ViT family), else 'cnn'."""
    return "vit" if hasattr(model, "patch_embed") and hasattr(model, "blocks") else "cnn"


class ExplainedModel(nn.Module):
    """Frozen classifier f(x) for x in [0, 1]; `model` is the raw (e.g. timm) network.

    The parameters never require grad and the network always stays in eval mode, even when a
    LightningModule that holds this wrapper is put into train mode.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int,
        name: str = "model",
    ) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.image_size = int(image_size)
        self.name = name
        self.family = model_family(model)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def patch_size(self) -> int | None:
        """The ViT patch size (None for CNNs): explainers and some baselines work per patch."""
        if self.family != "vit":
            return None
        return int(self.model.patch_embed.patch_size[0])

    def train(self, mode: bool = True) -> ExplainedModel:
        super().train(mode)
        self.model.eval()
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of f for images `x` of shape (N, 3, H, W) in [0, 1]."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"{self.name} expects {self.image_size}x{self.image_size} images, got "
                f"{tuple(x.shape[-2:])}: resize inputs to the model's image size (data.image_size)."
            )
        return self.model(self.normalize(x))

    @torch.no_grad()
    def classes_to_explain(self, images: torch.Tensor, labels: torch.Tensor, class_mode: str,
                           contrast: int | None = None) -> torch.Tensor:
        """What a map explains (`ltx.classes.CLASS_MODES`): f's top-1 or the ground truth (B,), or,
        in a contrastive mode, that class against `contrast` or f's runner-up, as pairs (B, 2)."""
        check_class_mode(class_mode)
        explained, contrastive = CLASS_MODES[class_mode]
        if explained == "target" and not contrastive:
            return labels
        logits = self.logits(images)
        classes = labels if explained == "target" else logits.argmax(-1)
        return contrast_pairs(logits, classes, contrast) if contrastive else classes

    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """f's logits, chunked so any number of images fits in memory."""
        return torch.cat([self(chunk) for chunk in x.split(batch_size)])

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Top-1 classes, chunked so any number of images fits in memory."""
        return self.logits(x, batch_size).argmax(-1)

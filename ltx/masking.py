"""ψ(x, m) = m·x + (1 − m)·b: how a mask hides pixels from the explained model.

The paper uses b = 0 (black) with soft masks. Other baselines change what "hidden" means, which
changes what the explainer learns; hard masks (threshold, straight-through gradients) close the
gap between the soft training signal and the binary masks the metrics apply.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms.functional import gaussian_blur


class Masking(nn.Module):
    """Base ψ: subclasses only say what the baseline image is."""

    def __init__(self, hard: bool = False, threshold: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"masking.threshold must be in (0, 1), got {threshold}")
        self.hard = hard
        self.threshold = threshold

    def baseline(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Masked images; `mask` (B, 1, H, W) in [0, 1] broadcasts over channels."""
        if self.hard:
            binary = (mask > self.threshold).to(mask.dtype)
            mask = binary + mask - mask.detach()  # straight-through: forward binary, backward identity
        return mask * images + (1 - mask) * self.baseline(images)


class ConstantBaseline(Masking):
    """A constant colour (the paper: 0, black)."""

    def __init__(self, value: float | Sequence[float] = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        value = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
        self.register_buffer("value", torch.tensor(value).view(1, 3, 1, 1))

    def baseline(self, images: torch.Tensor) -> torch.Tensor:
        return self.value.to(images.dtype).expand_as(images)


class MeanBaseline(Masking):
    """Each image's own mean colour: hides shape without introducing a foreign colour."""

    def baseline(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(-2, -1), keepdim=True).expand_as(images)


class BlurBaseline(Masking):
    """A Gaussian blur of the image: removes edges (shape) but keeps colour and layout."""

    def __init__(self, sigma: float = 5.0, kernel_size: int = 11, **kwargs) -> None:
        super().__init__(**kwargs)
        if kernel_size % 2 == 0:
            raise ValueError(f"masking.kernel_size must be odd, got {kernel_size}")
        self.sigma = sigma
        self.kernel_size = kernel_size

    def baseline(self, images: torch.Tensor) -> torch.Tensor:
        return gaussian_blur(images, [self.kernel_size] * 2, [self.sigma] * 2)


class NoiseBaseline(Masking):
    """Gaussian noise around mid-grey, fresh at every call: no constant colour to latch onto."""

    def __init__(self, std: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.std = std

    def baseline(self, images: torch.Tensor) -> torch.Tensor:
        return (0.5 + self.std * torch.randn_like(images)).clamp(0, 1)


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return -grad


class LearnedBaseline(Masking):
    """A learned low-resolution baseline image, trained *adversarially* during pretraining.

    Trained jointly with the same loss, a baseline would learn to look like the class and make
    tiny masks sufficient. Reversing its gradient makes it the fill that destroys the prediction
    most, so the explainer must keep every pixel that matters. Not finetuned per instance.
    """

    def __init__(self, resolution: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.logits = nn.Parameter(torch.zeros(1, 3, resolution, resolution))

    def baseline(self, images: torch.Tensor) -> torch.Tensor:
        colour = torch.sigmoid(_ReverseGrad.apply(self.logits))
        colour = F.interpolate(colour, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return colour.to(images.dtype).expand_as(images)

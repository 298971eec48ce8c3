"""Classic RISE causal metrics (Petsiuk et al. 2018) on the perturbation engine
(`ltx.metrics.perturbation.PerturbationCurve`): deletion from the image to normalised 0, and
insertion from RISE's blur back to the image, `step` pixels at a time."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.metrics.perturbation import PerturbationCurve, evenly_spaced


def rise_blur_kernel(size: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's blur kernel `gkern(11, 5)`: scipy's `gaussian_filter` of a centred delta.

    That is an outer product of 1-D Gaussian taps (radius ⌊4σ + 0.5⌋, normalised) applied with
    scipy's default 'reflect' boundary, which folds the taps that fall off the 11 pixels back
    in, so it is not a plain truncated Gaussian. Computed here in torch (no scipy needed).
    """
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (offsets / sigma) ** 2)
    taps = taps / taps.sum()
    # Output p sees input p + j; 'reflect' maps it into [0, size) with period 2·size.
    source = (torch.arange(size)[:, None] + offsets.long()[None]) % (2 * size)
    source = torch.where(source < size, source, 2 * size - 1 - source)
    line = ((source == size // 2) * taps).sum(1)
    return torch.outer(line, line)


class RISECurve(PerturbationCurve):
    """Classic RISE causal metrics: n = ⌈H·W / step⌉ steps of `step` pixels each (most salient
    first, the last step possibly shorter), n + 1 points, AUC = (Σ a_i − a_0/2 − a_n/2) / n in
    [0, 1] (the trapezoid on x = i/n). a_i is the softmax probability of f's top-1 class on
    the original image (an extra forward of the B originals), so `labels` are not used.

    RISE works in normalised space; 0 there is the pixel value `model.mean` (std cancels), so
    these metrics stay in pixel space and need only the model's `mean` buffer (1, 3, 1, 1).
    """

    auc_scale = 1.0
    descending = True
    score = "prob"

    def __init__(self, model: nn.Module, *, step: int = 224, chunk_size: int = 256, **kwargs: Any) -> None:
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        if not isinstance(getattr(model, "mean", None), Tensor):
            raise ValueError(f"{type(self).__name__} needs the model's normalisation mean as `model.mean`, "
                             "a (1, 3, 1, 1) tensor: 0 in normalised space is that pixel value")
        super().__init__(model, chunk_size=chunk_size, **kwargs)
        self.step = step

    def schedule(self, height: int, width: int) -> Tensor:
        pixels = height * width
        num_steps = -(-pixels // self.step)
        return (torch.arange(num_steps + 1) * self.step).clamp(max=pixels)

    def schedule_x(self, num_points: int) -> Tensor:
        return evenly_spaced(num_points)

    def normalised_zero(self, images: Tensor) -> Tensor:
        return self.model.mean.to(images.device, images.dtype).reshape(1, -1, 1, 1)

    def scored_classes(self, images: Tensor, labels: Tensor, logits: Tensor) -> Tensor:
        return self._forward_chunked(images).argmax(-1)


class DeletionRISE(RISECurve):
    """RISE deletion: from x, set the most salient pixels to normalised 0; lower is better."""

    name = "del_rise"
    description = ("RISE deletion: top-1 probability, salient pixels set to normalised 0 "
                   "(AUC in [0, 1], lower is better)")
    higher_is_better = False

    def endpoints(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return images, self.normalised_zero(images)


class InsertionRISE(RISECurve):
    """RISE insertion: from a blur of x, put the most salient pixels back; higher is better.

    The blur is RISE's: `rise_blur_kernel()` per channel with zero padding 5 *in normalised
    space*, i.e. conv(x − mean) + mean in pixel space, so borders fade to the mean colour.
    """

    name = "ins_rise"
    description = ("RISE insertion: top-1 probability, salient pixels restored into a blur "
                   "(AUC in [0, 1], higher is better)")
    higher_is_better = True

    def endpoints(self, images: Tensor) -> tuple[Tensor, Tensor]:
        zero = self.normalised_zero(images)
        channels = images.shape[1]
        kernel = rise_blur_kernel().to(images.device, images.dtype).expand(channels, 1, -1, -1)
        blurred = F.conv2d(images - zero, kernel, padding=kernel.shape[-1] // 2, groups=channels) + zero
        return blurred, images


RISE_METRICS: dict[str, type[RISECurve]] = {cls.name: cls for cls in (InsertionRISE, DeletionRISE)}

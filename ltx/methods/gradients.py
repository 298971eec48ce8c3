"""Gradient baselines through Captum: Integrated Gradients, plain gradients (saliency), gradient × input.

Captum runs on the explained-model wrapper, so attributions are w.r.t. pixels in [0, 1] (the space
LTX masks in) and a black image (0) is the natural IG baseline, whatever the normalisation.
"""

from __future__ import annotations

import torch
from captum.attr import GradientAttribution
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from captum.attr import Saliency as CaptumSaliency

from ltx.methods.base import Method, autograd_enabled, register_method
from ltx.models.explained import ExplainedModel


def _attribute(
    attribution: GradientAttribution, images: torch.Tensor, classes: torch.Tensor, **kwargs
) -> torch.Tensor:
    """One Captum `attribute` call for per-sample targets, safe under no_grad / inference_mode."""
    with autograd_enabled():
        inputs = images.clone().requires_grad_(True)  # a clone also leaves inference mode
        return attribution.attribute(inputs, target=classes.clone(), **kwargs).detach()


@register_method("ig")
class IntegratedGradients(Method):
    """Integrated Gradients (Sundararajan et al. 2017) from a black image, via Captum.

    Map = Σ_channels |attribution|: the magnitude, because the metrics remove pixels by rank and a
    strongly negative pixel matters as much to f as a strongly positive one. Captum's default
    Gauss-Legendre quadrature is used (it converges in fewer steps than a Riemann sum).
    Costs `n_steps` forward+backward passes per image; `internal_batch_size` bounds how many
    (image, step) pairs go through the model at once (None: all of them).
    """

    def __init__(
        self, model: ExplainedModel, n_steps: int = 50, internal_batch_size: int | None = None
    ) -> None:
        super().__init__(model)
        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size
        self.attribution = CaptumIntegratedGradients(model)

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        # Captum refuses an internal batch smaller than its input batch, so chunk the images first.
        chunk = self.internal_batch_size or len(images)
        attributions = [
            _attribute(
                self.attribution,
                part,
                part_classes,
                baselines=0.0,
                n_steps=self.n_steps,
                internal_batch_size=self.internal_batch_size,
            )
            for part, part_classes in zip(images.split(chunk), classes.split(chunk), strict=True)
        ]
        return torch.cat(attributions).abs().sum(1)


@register_method("saliency")
class Saliency(Method):
    """Vanilla gradient (Simonyan et al. 2014): max over channels of |∂f_c/∂x|, one backward pass."""

    def __init__(self, model: ExplainedModel) -> None:
        super().__init__(model)
        self.attribution = CaptumSaliency(model)

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return _attribute(self.attribution, images, classes, abs=True).amax(1)


@register_method("gradient_x_input")
class GradientXInput(Method):
    """Gradient × input (Shrikumar et al. 2016): Σ_channels |x ⊙ ∂f_c/∂x|, one backward pass.

    With the black baseline this is IG's single-step approximation, which is why it is offered.
    """

    def __init__(self, model: ExplainedModel) -> None:
        super().__init__(model)
        self.attribution = CaptumInputXGradient(model)

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return _attribute(self.attribution, images, classes).abs().sum(1)

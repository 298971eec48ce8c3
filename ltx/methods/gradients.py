"""Gradient baselines: Integrated Gradients, plain gradients (saliency) and gradient × input through
Captum, and IDGI (written here: Captum has none).

They run on the explained-model wrapper, so attributions are w.r.t. pixels in [0, 1] (the space
LTX masks in) and a black image (0) is the natural path baseline, whatever the normalisation.
What they attribute, f_c, is `ltx.classes.class_score`: the logit of c, or in a contrastive class
mode logit_c − logit_c′ (Captum gets it as a custom forward taking the classes), so every one of
them explains pairs (c, c′) too.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import torch
from captum.attr import GradientAttribution
from captum.attr import InputXGradient as CaptumInputXGradient
from captum.attr import IntegratedGradients as CaptumIntegratedGradients
from captum.attr import Saliency as CaptumSaliency

from ltx.classes import class_score
from ltx.methods.base import Method, autograd_enabled, register_method
from ltx.models.explained import ExplainedModel


def scored(model: ExplainedModel) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Captum's forward: (inputs, classes) → f_c (B,), the `class_score` of each input's class or pair."""
    return lambda inputs, classes: class_score(model(inputs), classes)


def _attribute(
    attribution: GradientAttribution, images: torch.Tensor, classes: torch.Tensor, **kwargs
) -> torch.Tensor:
    """One Captum `attribute` call (its forward: `scored`) for per-sample classes or pairs, safe
    under no_grad / inference_mode."""
    with autograd_enabled():
        inputs = images.clone().requires_grad_(True)  # a clone also leaves inference mode
        return attribution.attribute(inputs, additional_forward_args=(classes.clone(),), **kwargs).detach()


class AttributionMethod(Method):
    """A method that attributes f_c to every input value; its map is Σ_channels |attribution|.

    The magnitude, because the metrics remove pixels by rank and a strongly negative pixel matters
    as much to f as a strongly positive one. One rule for all of them keeps their maps comparable;
    `attributions` gives the signed values (B, 3, H, W) that known-answer tests check.
    """

    contrastive = True

    @abstractmethod
    def attributions(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Signed attributions of f_c (`class_score` of `classes`: a logit, or a pair's difference),
        the shape of `images`."""

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return self.attributions(images, classes).abs().sum(1)


@register_method("ig")
class IntegratedGradients(AttributionMethod):
    """Integrated Gradients (Sundararajan et al. 2017) of f_c from a black image, via Captum.

    Captum's default Gauss-Legendre quadrature is used (it converges in fewer steps than a Riemann
    sum). Costs `n_steps` forward+backward passes per image; `internal_batch_size` bounds how many
    (image, step) pairs go through the model at once (None: all of them).
    """

    def __init__(
        self, model: ExplainedModel, n_steps: int = 50, internal_batch_size: int | None = None
    ) -> None:
        super().__init__(model)
        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size
        self.attribution = CaptumIntegratedGradients(scored(model))

    def attributions(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        # Captum refuses an internal batch smaller than its input batch, so chunk the images first.
        chunk = self.internal_batch_size or len(images)
        return torch.cat([
            _attribute(
                self.attribution,
                part,
                part_classes,
                baselines=0.0,
                n_steps=self.n_steps,
                internal_batch_size=self.internal_batch_size,
            )
            for part, part_classes in zip(images.split(chunk), classes.split(chunk), strict=True)
        ])


@register_method("idgi")
class IDGI(AttributionMethod):
    """Important Direction Gradient Integration (Yang et al., CVPR 2023) on IG's straight path.

    A Riemann sum of IG multiplies each step x_{i+1} − x_i by the gradient g_i = ∇f_c(x_i); the
    part of the step orthogonal to g_i does not change f_c and only adds noise. IDGI keeps the
    part along g_i, scaled to the step's true change: segment i adds
    g_i ⊙ g_i · (f_c(x_{i+1}) − f_c(x_i)) / ||g_i||² (the paper's Algorithm 1, as its official
    `IDGI(Gradients, Predictions)`), so each segment sums to its change of f_c and the whole, on
    any path, to f_c(x) − f_c(black) exactly. A segment whose gradient is 0 adds nothing.

    Path x_i = (i / n) · x, i = 0 … n (n = `n_steps`), gradients at x_0 … x_{n−1}: IDGI needs f_c
    at consecutive points, which IG's Gauss-Legendre nodes are not. f_c is what `ig` attributes
    (`class_score`), so the two compare on the same steps. Costs `n_steps` forward+backward passes
    and one forward pass per image; `internal_batch_size` bounds the (image, point) pairs per pass,
    one backward each (None: all of them at once).
    """

    def __init__(
        self, model: ExplainedModel, n_steps: int = 50, internal_batch_size: int | None = None
    ) -> None:
        super().__init__(model)
        if n_steps < 1:
            raise ValueError(f"IDGI needs n_steps >= 1, got {n_steps}")
        self.n_steps = n_steps
        self.internal_batch_size = internal_batch_size

    def _scores(self, points: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return class_score(self.model(points), classes)

    def attributions(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        n, count = self.n_steps, len(images)
        chunk = self.internal_batch_size or count * n
        with autograd_enabled():
            images, classes = images.clone(), classes.clone()  # clones leave inference mode
            values = images.new_empty(count, n + 1)  # f_c(x_i) of every image and point
            with torch.no_grad():
                values[:, n] = torch.cat([
                    self._scores(part, part_classes)
                    for part, part_classes in zip(images.split(chunk), classes.split(chunk), strict=True)
                ])
            attributions = torch.zeros_like(images)
            # Jobs (image, point) in order; a job's segment needs f_c at the next point, evaluated
            # with the next job: a chunk's last job waits (`pending`) for the following chunk.
            pending = (images.new_empty(0, dtype=torch.long), images.new_empty(0, *images.shape[1:]))
            for jobs in torch.arange(count * n, device=images.device).split(chunk):
                index, step = jobs // n, jobs % n
                alphas = (step.to(images.dtype) / n)[:, None, None, None]
                points = (images[index] * alphas).requires_grad_(True)
                scores = self._scores(points, classes[index])
                (gradients,) = torch.autograd.grad(scores.sum(), points)
                values[index, step] = scores.detach()
                squared = gradients.square()
                norms = squared.sum((1, 2, 3), keepdim=True).clamp_min(torch.finfo(squared.dtype).tiny)
                directions = squared / norms  # g ⊙ g / ||g||²: 0 where the gradient is 0
                jobs, directions = torch.cat([pending[0], jobs]), torch.cat([pending[1], directions])
                index, step = jobs // n, jobs % n
                ready = (step == n - 1) | (jobs < jobs[-1])
                change = values[index, step + 1] - values[index, step]
                attributions.index_add_(0, index[ready], directions[ready] * change[ready, None, None, None])
                pending = (jobs[~ready], directions[~ready])
        return attributions.detach()


@register_method("saliency")
class Saliency(Method):
    """Vanilla gradient (Simonyan et al. 2014): max over channels of |∂f_c/∂x|, one backward pass."""

    contrastive = True

    def __init__(self, model: ExplainedModel) -> None:
        super().__init__(model)
        self.attribution = CaptumSaliency(scored(model))

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return _attribute(self.attribution, images, classes, abs=True).amax(1)


@register_method("gradient_x_input")
class GradientXInput(AttributionMethod):
    """Gradient × input (Shrikumar et al. 2016): Σ_channels |x ⊙ ∂f_c/∂x|, one backward pass.

    With the black baseline this is IG's single-step approximation, which is why it is offered.
    """

    def __init__(self, model: ExplainedModel) -> None:
        super().__init__(model)
        self.attribution = CaptumInputXGradient(scored(model))

    def attributions(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return _attribute(self.attribution, images, classes)

"""Perturbation metrics: remove pixels in saliency order, watch the explained model's output.

All metrics share one engine (`PerturbationCurve`): a map is turned into per-pixel ranks once,
and every (image, step) input of a batch is built as `where(rank < k_step, finish, start)` and
sent through the model in chunks of `chunk_size` images (a run). A subclass only says which order
to use, what "start" and "finish" are, how many pixels each step changes and how a step is scored
(a blend, `ltx.metrics.continuous`, also replaces the ranks by per-pixel weights and the `where`
by a linear blend).
Metrics whose runs would be the same (their `plan`: POS and DEL, NEG and INS, a ROAD order's
accuracy and probability) share one when evaluated together (`ltx.metrics.suite.PerturbationSuite`);
a metric used alone makes its own.

- `pos`, `neg`, `ins`, `del` (`PaperCurve`): the LTX paper suite, exactly as PROTOCOLS.md
  ("Evaluation: POS / NEG" and "INS / DEL") describes it.
- `ins_rise`, `del_rise` (`ltx.metrics.rise.RISECurve`): classic RISE insertion/deletion
  (Petsiuk et al. 2018).
- `road_*` (`ltx.metrics.road.ROADCurve`): the paper's curves with removed pixels imputed
  (ROAD, Rong et al. 2022); it overrides `perturbed_inputs` and `run_settings`.
- `sufficiency`, `necessity` (`ltx.metrics.continuous.BlendCurve`): the image blended towards
  the paper's black baseline in proportion to the normalised map or its complement, at
  intensities t ∈ [0, 1]; it overrides `pixel_positions`, `step_masks` and `perturbed_inputs`.

The explained model maps images in [0, 1] (N, 3, H, W) to logits (N, C) and normalises
internally; metrics only call it, under `torch.inference_mode()`. Computation runs on the
model's device (that of its first parameter or buffer; the images' for a stateless model):
inputs are moved there, so CPU batches can be scored by a GPU model.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from fractions import Fraction
from itertools import pairwise
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from ltx.classes import class_hit, class_probability
from ltx.models.explainer import upsample_to_image

PAPER_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def saliency_ranks(saliency: Tensor, size: tuple[int, int], *, descending: bool) -> Tensor:
    """Rank (0 = perturbed first) of every pixel, (B, H·W) int32 (half the traffic of int64).

    Ties keep a stable order, lower flat index first, in both directions: ascending is the
    stable sort of the values themselves, *not* the reversed descending order (which would
    put higher indices first). Only the ranking of the values matters, so any dtype and any
    monotone rescaling of a map give the same ranks (bool maps are ranked as 0/1).
    """
    flat = upsample_to_image(saliency, size, dtype=torch.float64).flatten(1)
    if flat.dtype == torch.bool:
        flat = flat.to(torch.uint8)
    order = torch.sort(flat, dim=1, descending=descending, stable=True).indices
    positions = torch.arange(flat.shape[1], dtype=torch.int32, device=flat.device).expand_as(order)
    return torch.empty_like(order, dtype=torch.int32).scatter_(1, order, positions)


def evenly_spaced(num_points: int) -> Tensor:
    """x_i = i / (n − 1), i = 0, …, n − 1, (n,) float64, each correctly rounded (0 and 1 exact):
    the x positions of a curve whose points split [0, 1] evenly."""
    return torch.arange(num_points, dtype=torch.float64) / (num_points - 1)


def job_rows(tensor: Tensor, image: Tensor) -> Tensor:
    """The rows of `tensor` (B, ...) for jobs of images `image` (n,); a tensor of batch size 1
    broadcasts to every job as it is."""
    return tensor if tensor.shape[0] == 1 else tensor[image]


def check_batch(images: Tensor, saliency: Tensor, labels: Tensor) -> None:
    """Images (B, C, H, W), saliency with batch size B, labels (B,) or pairs (B, 2), or a ValueError."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if saliency.shape[0] != images.shape[0] or labels.shape not in ((images.shape[0],), (images.shape[0], 2)):
        raise ValueError(f"batch sizes differ: images {tuple(images.shape)}, "
                         f"saliency {tuple(saliency.shape)}, labels {tuple(labels.shape)}")


class PerturbationCurve(Metric):
    """Shared engine: per-image curves of a score as pixels are perturbed in saliency order.

    `update(images, saliency, labels, gt_masks=None)` (the signature of every `ltx` metric;
    `gt_masks` is ignored here): images (B, 3, H, W) in [0, 1], saliency (B, h, w) or
    (B, 1, h, w) of any dtype and scale, labels (B,) ground-truth classes, or pairs (B, 2) (c, c′)
    scored as c against c′ (`ltx.classes`: LTX's selection in a contrastive class mode). It is
    `curves` then `update_curves`, which adds per-image curves computed earlier (a caller that has
    scored an image with the same map already need not score it again). `compute()` is the AUC (mean of
    per-image AUCs, which equals the AUC of the mean curve); `compute_curve()` the mean curve;
    `compute_per_image()` the per-image AUCs in update order.

    State is summed across processes (`dist_reduce_fx="sum"`, per-image AUCs concatenated),
    so DDP reduction is exact by construction.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    #: True: the most salient pixels are perturbed first (a blend: most).
    descending: ClassVar[bool]
    #: "hit" (top-1 == class; for a pair, c ahead of c′) or "prob" (softmax probability of the class;
    #: for a pair, the two-class one): `ltx.classes.class_hit`, `class_probability`.
    score: ClassVar[str]
    #: AUC = auc_scale · trapezoid(curve, x).
    auc_scale: ClassVar[float]
    #: whether the benchmark-validity verdict needs this metric's check (ltx.metrics.validity);
    #: False: the check is shown, not required
    validity_required: ClassVar[bool] = True
    is_differentiable = False
    full_state_update = False

    def __init__(self, model: nn.Module, *, chunk_size: int = 256, num_points: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        # Held outside nn.Module's registry: the metric must not own (move, save, count) f.
        object.__setattr__(self, "_model", model)
        self.chunk_size = chunk_size
        # A scalar 0 broadcasts to the first curve when the number of points depends on H·W.
        curve = torch.zeros((num_points,) if num_points else (), dtype=torch.float64)
        self.add_state("curve_sum", default=curve, dist_reduce_fx="sum")
        self.add_state("auc_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("image_aucs", default=[], dist_reduce_fx="cat")

    @property
    def model(self) -> nn.Module:
        return self._model

    # --- what subclasses define ------------------------------------------------------------------

    def schedule(self, height: int, width: int) -> Tensor:
        """Each step's level (S,): how many pixels it perturbs (int64; a blend: its intensity t)."""
        raise NotImplementedError

    def schedule_x(self, num_points: int) -> Tensor:
        """The x positions (S,) float64 of a curve with `num_points` points."""
        raise NotImplementedError

    def endpoints(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(start, finish): a step shows `finish` on its perturbed pixels and `start` elsewhere.
        Each has batch size B or 1 (broadcast)."""
        raise NotImplementedError

    def pixel_positions(self, saliency: Tensor, size: tuple[int, int]) -> Tensor:
        """What a step's level is compared with, per pixel (B, H·W), computed once per map: here
        its rank in this metric's order (`saliency_ranks`)."""
        return saliency_ranks(saliency, size, descending=self.descending)

    def step_masks(self, positions: Tensor, levels: Tensor) -> Tensor:
        """What n jobs perturb (n, H·W), from their images' `pixel_positions` (n, H·W) and their
        steps' levels (n, 1) (`schedule`, in the positions' dtype): here the pixels ranked before
        the step's count, bool."""
        return positions < levels

    def scored_classes(self, images: Tensor, labels: Tensor, logits: Tensor) -> Tensor:
        """The class (B,), or pairs (B, 2), whose output is scored at every step; `logits` (B, S, C)
        are the run's outputs, step by step."""
        return labels

    def run_settings(self) -> tuple:
        """The instance settings that change the perturbed inputs (none here): part of `plan`."""
        return ()

    def plan(self, height: int, width: int) -> tuple:
        """What decides this metric's run on images H × W: the model, the order, the steps, the
        position, mask, endpoint and input methods, `run_settings()` and the chunk size (a float
        forward may round differently by batch size). Metrics with equal plans make the same run
        of a batch."""
        cls = type(self)
        return (self.model, self.descending, tuple(self.schedule(height, width).tolist()),
                cls.pixel_positions, cls.step_masks, cls.endpoints, cls.perturbed_inputs, self.run_settings(),
                self.chunk_size)

    # --- the engine --------------------------------------------------------------------------------

    def _forward_chunked(self, inputs: Tensor) -> Tensor:
        return torch.cat([self.model(chunk) for chunk in inputs.split(self.chunk_size)])

    def _score(self, logits: Tensor, classes: Tensor) -> Tensor:
        if self.score == "hit":
            return class_hit(logits, classes)
        return class_probability(logits.float() if logits.element_size() < 4 else logits, classes)

    def _model_device(self, images: Tensor) -> torch.device:
        tensor = next(self.model.parameters(), None)
        tensor = next(self.model.buffers(), None) if tensor is None else tensor
        return images.device if tensor is None else tensor.device

    @torch.inference_mode()
    def perturbed_logits(self, images: Tensor, saliency: Tensor) -> Tensor:
        """This metric's run: the model's outputs (B·S, C) on every (image, step) input of the
        batch, image-major, built and sent through the model in chunks."""
        height, width = images.shape[-2:]
        device = self._model_device(images)
        images = images.to(device)
        batch = images.shape[0]
        positions = self.pixel_positions(saliency.to(device), (height, width))
        levels = self.schedule(height, width).to(device, positions.dtype)
        steps = levels.numel()
        start, finish = self.endpoints(images)
        # All (image, step) jobs, image-major, as flat per-job vectors sliced chunk by chunk: one
        # forward and a handful of kernels per chunk.
        job_image = torch.arange(batch, device=device).repeat_interleave(steps)
        job_level = levels.repeat(batch)[:, None]
        outputs = []
        for begin in range(0, batch * steps, self.chunk_size):
            jobs = slice(begin, begin + self.chunk_size)
            image = job_image[jobs]
            perturbed = self.step_masks(positions[image], job_level[jobs]).view(-1, 1, height, width)
            outputs.append(self.model(self.perturbed_inputs(start, finish, image, perturbed)))
        return torch.cat(outputs)

    @torch.inference_mode()
    def score_run(self, images: Tensor, labels: Tensor, logits: Tensor) -> Tensor:
        """Per-image curves (B, S) from a run's outputs (`perturbed_logits` under this metric's plan)."""
        batch, steps = images.shape[0], logits.shape[0] // images.shape[0]
        classes = self.scored_classes(images.to(logits.device), labels.to(logits.device),
                                      logits.view(batch, steps, -1))
        return self._score(logits, classes.repeat_interleave(steps, dim=0)).view(batch, steps)

    def perturbed_inputs(self, start: Tensor, finish: Tensor, image: Tensor, perturbed: Tensor) -> Tensor:
        """The inputs (n, C, H, W) of n jobs: job j is image `image[j]` of the batch with its
        `perturbed[j]` pixels (n, 1, H, W) bool showing `finish` and the others `start`."""
        inputs = start[image]
        torch.where(perturbed, job_rows(finish, image), inputs, out=inputs)
        return inputs

    def curves(self, images: Tensor, saliency: Tensor, labels: Tensor) -> Tensor:
        """Per-image curves (B, S): the score at every step, from this metric's own run (an
        ordinary tensor outside inference mode). Inputs are not modified."""
        check_batch(images, saliency, labels)
        return self.score_run(images, labels, self.perturbed_logits(images, saliency)).clone()

    def auc(self, curves: Tensor) -> Tensor:
        """Per-image AUCs of curves (B, S) from the same images' size."""
        x = self.schedule_x(curves.shape[-1]).to(curves.device, curves.dtype)
        return self.auc_scale * torch.trapezoid(curves, x, dim=-1)

    def per_image(self, images: Tensor, saliency: Tensor, labels: Tensor) -> Tensor:
        """Per-image AUCs (B,) in float64, as `update` computes them, without touching the state."""
        return self.auc(self.curves(images, saliency, labels).double())

    # --- torchmetrics ------------------------------------------------------------------------------

    def update(self, images: Tensor, saliency: Tensor, labels: Tensor,
               gt_masks: Tensor | None = None) -> None:
        self._add_curves(self.curves(images, saliency, labels))

    def update_curves(self, curves: Tensor) -> None:
        """Add per-image curves (B, S) as `curves` returns them, for images scored earlier: the
        state then is what `update` on those images would have made."""
        # through torchmetrics' wrapper, as `update` (which calls `_add_curves` inside its own):
        # the cached `compute` value is dropped and the update counted
        self._wrap_update(self._add_curves)(curves)

    def _add_curves(self, curves: Tensor) -> None:
        if curves.dim() != 2:
            raise ValueError(f"{self.name}: curves must be (B, S), got shape {tuple(curves.shape)}")
        curves = curves.to(self.auc_sum.device, torch.float64)
        if self.curve_sum.dim() and self.curve_sum.shape != curves.shape[1:]:
            raise ValueError(f"{self.name}: curves of {curves.shape[1]} steps, earlier updates had "
                             f"{self.curve_sum.shape[0]} (a step count set by the image size): use one "
                             f"image size per metric")
        aucs = self.auc(curves)
        self.curve_sum = self.curve_sum + curves.sum(0)
        self.auc_sum = self.auc_sum + aucs.sum()
        self.count = self.count + curves.shape[0]
        self.image_aucs.append(aucs)

    def compute(self) -> Tensor:
        """The AUC: mean of per-image AUCs (paper units, see the class)."""
        return self.auc_sum / self.count

    def compute_curve(self) -> Tensor:
        """The mean curve over images, one value per step (for plots), synced like `compute`."""
        with self._synced():
            return self.curve_sum / self.count

    def compute_per_image(self) -> Tensor:
        """Per-image AUCs in update order (under DDP: rank 0's, then rank 1's, …), synced."""
        with self._synced():
            values = self.image_aucs
            return (torch.cat(values) if isinstance(values, list) else values).clone()

    def _synced(self) -> AbstractContextManager:
        """The states of all processes, as torchmetrics gives them to `compute`."""
        return self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync,
                                 should_unsync=self._should_unsync)


class PaperCurve(PerturbationCurve):
    """The LTX paper's 10-step curves: at fraction r the first k = ⌊r·H·W⌋ pixels of the order
    are set to 0 (black, in [0, 1] space) in all channels; AUC = 100 · trapezoid(curve, r).

    k is computed exactly: r is read as the decimal it prints as (0.3 is 3/10, not
    0.29999…), so k = (numerator · H · W) // denominator; for the paper's r = i/10 that is
    k = (i · H · W) // 10. Scores always use the ground-truth label (`labels`), whichever class
    the maps explain.
    """

    auc_scale = 100.0

    def __init__(self, model: nn.Module, *, fractions: Sequence[float] | None = None, chunk_size: int = 256,
                 **kwargs: Any) -> None:
        fractions = tuple(float(r) for r in (PAPER_FRACTIONS if fractions is None else fractions))
        increasing = all(a < b for a, b in pairwise(fractions))
        if not fractions or not increasing or not 0.0 <= fractions[0] <= fractions[-1] <= 1.0:
            raise ValueError(f"fractions must be increasing values in [0, 1], got {fractions}")
        super().__init__(model, chunk_size=chunk_size, num_points=len(fractions), **kwargs)
        self.fractions = fractions
        self._exact = [Fraction(str(r)) for r in fractions]

    def schedule(self, height: int, width: int) -> Tensor:
        return torch.tensor([r.numerator * height * width // r.denominator for r in self._exact])

    def schedule_x(self, num_points: int) -> Tensor:
        return torch.tensor(self.fractions, dtype=torch.float64)

    def endpoints(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return images, images.new_zeros(1, 1, 1, 1)


class PositivePerturbation(PaperCurve):
    """POS: top-1 accuracy as the most salient pixels are removed first; lower is better."""

    name = "pos"
    description = "top-1 hit rate, most salient pixels blacked out first (AUC ×100, lower is better)"
    higher_is_better = False
    descending = True
    score = "hit"


class NegativePerturbation(PaperCurve):
    """NEG: top-1 accuracy as the least salient pixels are removed first; higher is better."""

    name = "neg"
    description = "top-1 hit rate, least salient pixels blacked out first (AUC ×100, higher is better)"
    higher_is_better = True
    descending = False
    score = "hit"


class Deletion(PaperCurve):
    """DEL (paper suite): label probability, most salient pixels removed first; lower is better."""

    name = "del"
    description = "label probability, most salient pixels blacked out first (AUC ×100, lower is better)"
    higher_is_better = False
    descending = True
    score = "prob"


class Insertion(PaperCurve):
    """INS (paper suite): label probability, least salient pixels removed first; higher is better.

    As the LTX code computes it: a removal curve in the NEG order, not a RISE-style insertion.
    """

    name = "ins"
    description = "label probability, least salient pixels blacked out first (AUC ×100, higher is better)"
    higher_is_better = True
    descending = False
    score = "prob"


PAPER_METRICS: dict[str, type[PaperCurve]] = {
    cls.name: cls for cls in (PositivePerturbation, NegativePerturbation, Insertion, Deletion)
}

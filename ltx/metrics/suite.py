"""Metrics evaluated together, perturbation metrics sharing their forward passes.

A perturbation metric's run (every (image, step) input of a batch through the model) is decided
by its `plan`: POS and DEL black out the same pixels, as do NEG and INS, and a ROAD order's
accuracy and probability impute the same ones, so each pair needs one run, scored twice. A
`PerturbationSuite` groups its metrics by plan and runs each plan once per batch, in any metric
order; it keeps no outputs between calls, so nothing can be served stale.
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics import Metric

from ltx.metrics.perturbation import PerturbationCurve, check_batch


class PerturbationSuite:
    """`metrics` (name → metric, in the suite's order, as `ltx.stages.evaluate.build_metrics` makes
    them) updated together: every metric ends as its own `update` would leave it, bit for bit,
    with one run per plan instead of one per perturbation metric."""

    def __init__(self, metrics: dict[str, Metric]) -> None:
        self.metrics = dict(metrics)
        #: the perturbation metrics, in the suite's order; the others (localization) update alone
        self.curve_metrics = {name: m for name, m in self.metrics.items() if isinstance(m, PerturbationCurve)}

    def runs(self, height: int, width: int) -> list[list[str]]:
        """The perturbation metrics' names grouped by plan on images H × W: one run per group."""
        groups: dict[tuple, list[str]] = {}
        for name, metric in self.curve_metrics.items():
            groups.setdefault(metric.plan(height, width), []).append(name)
        return list(groups.values())

    def passes_per_run(self, height: int, width: int) -> list[int]:
        """Forward passes per image of H × W (images through the model) of each run, one per step;
        their sum is what `curves` and `update` make (RISE metrics also run each original once,
        to find the class they score)."""
        metrics = self.curve_metrics
        return [len(metrics[names[0]].schedule(height, width)) for names in self.runs(height, width)]

    def curves(self, images: Tensor, saliency: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Per-image curves (B, S) of every perturbation metric, as its `curves` returns them."""
        check_batch(images, saliency, labels)
        curves = {}
        for names in self.runs(*images.shape[-2:]):
            logits = self.curve_metrics[names[0]].perturbed_logits(images, saliency)
            for name in names:
                curves[name] = self.curve_metrics[name].score_run(images, labels, logits).clone()
        return {name: curves[name] for name in self.curve_metrics}

    def update(self, images: Tensor, saliency: Tensor, labels: Tensor, gt_masks: Tensor | None = None,
               curves: dict[str, Tensor] | None = None) -> None:
        """Update every metric with a batch; `curves`: the batch's perturbation curves computed
        earlier (as `curves` returns them), else they are computed here."""
        curves = self.curves(images, saliency, labels) if curves is None else curves
        for name, metric in self.metrics.items():
            if name in self.curve_metrics:
                metric.update_curves(curves[name])
            else:
                metric.update(images, saliency, labels, gt_masks=gt_masks)

    def compute(self) -> dict[str, Tensor]:
        return {name: metric.compute() for name, metric in self.metrics.items()}

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

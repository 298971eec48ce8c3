"""Evaluation metrics as `torchmetrics.Metric`s, built by name and used the same way.

Every metric: `create_metric(name, model, **kwargs)`, then
`update(images, saliency, labels, gt_masks=None)` per batch and `compute()` at the end.
Perturbation metrics (`pos`, `neg`, `ins`, `del`, `ins_rise`, `del_rise`, and ROAD's
`road_morf_acc`, `road_lerf_acc`, `road_morf_prob`, `road_lerf_prob`) need the model and
ignore `gt_masks`; localization metrics (`pointing_game`, `energy_pointing_game`, `gt_auroc`)
need `gt_masks` and ignore the model, the images and the labels. Each class carries `name`,
`higher_is_better` and a one-line `description`. A `PerturbationSuite` updates several metrics
together, with one set of forward passes for the perturbation metrics that perturb alike.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchmetrics import Metric

from ltx.metrics.localization import EnergyPointingGame, LocalizationMetric, MaskAUROC, PointingGame
from ltx.metrics.perturbation import (
    PERTURBATION_METRICS,
    Deletion,
    DeletionRISE,
    Insertion,
    InsertionRISE,
    NegativePerturbation,
    PaperCurve,
    PerturbationCurve,
    PositivePerturbation,
    RISECurve,
    per_image_auc,
)
from ltx.metrics.road import (
    ROAD_METRICS,
    ROADCurve,
    ROADLeRFAccuracy,
    ROADLeRFProbability,
    ROADMoRFAccuracy,
    ROADMoRFProbability,
)
from ltx.metrics.suite import PerturbationSuite

METRICS: dict[str, type[Metric]] = {
    **PERTURBATION_METRICS,
    **ROAD_METRICS,
    **{cls.name: cls for cls in (PointingGame, EnergyPointingGame, MaskAUROC)},
}


def create_metric(name: str, model: nn.Module | None = None, **kwargs: Any) -> Metric:
    """The metric registered as `name`, for explained model `model` (unused by localization)."""
    cls = METRICS.get(name)
    if cls is None:
        raise ValueError(f"unknown metric {name!r}: choose one of {sorted(METRICS)}")
    if issubclass(cls, PerturbationCurve) and model is None:
        raise ValueError(f"metric {name!r} perturbs inputs of a model: pass the explained model")
    return cls(model, **kwargs)


__all__ = [
    "METRICS",
    "Deletion",
    "DeletionRISE",
    "EnergyPointingGame",
    "Insertion",
    "InsertionRISE",
    "LocalizationMetric",
    "MaskAUROC",
    "NegativePerturbation",
    "PaperCurve",
    "PerturbationCurve",
    "PerturbationSuite",
    "PointingGame",
    "PositivePerturbation",
    "RISECurve",
    "ROADCurve",
    "ROADLeRFAccuracy",
    "ROADLeRFProbability",
    "ROADMoRFAccuracy",
    "ROADMoRFProbability",
    "create_metric",
    "per_image_auc",
]

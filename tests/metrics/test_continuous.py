"""Sufficiency and necessity under continuous perturbation: a model that reads its class in a known
region (the region's map is sufficient and necessary, its inverse neither, random maps in between),
the curves' endpoints bit for bit, a plain per-image per-intensity loop, batching and chunking,
constant maps, the suite's cost."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ltx.metrics import METRICS, Necessity, PerturbationSuite, Sufficiency, create_metric
from ltx.metrics.continuous import normalised_relevance
from ltx.stages.evaluate import build_metrics
from tests.helpers import compose_config

SIZE, POINTS = 8, 11
BLENDS = (Sufficiency, Necessity)
EPS64 = torch.finfo(torch.float64).eps
# Per-image AUCs: 100 · (a trapezoid of 11 float64 probabilities over [0, 1]); a float64 forward
# of another batch size, or a blend weight rounded once more, moves a probability by a few eps64.
AUC_ATOL = 100 * 4 * 16 * EPS64


class RegionModel(nn.Module):
    """Two classes: logit_1 = scale · Σ_{p ∈ R} mean_channels(x[:, p]), logit_0 = 0, so p_1 is a
    function of the pixels of region R (rows and columns 2..5 of 8×8: 16 px) alone. float64."""

    def __init__(self, scale: float = 0.25) -> None:
        super().__init__()
        region = torch.zeros(SIZE, SIZE, dtype=torch.float64)
        region[2:6, 2:6] = 1
        self.register_buffer("region", region)
        self.scale = scale
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        evidence = self.scale * (x.mean(1) * self.region).sum((1, 2))
        return torch.stack([torch.zeros_like(evidence), evidence], dim=1)


def probability(model: RegionModel, images: torch.Tensor, label: int = 1) -> torch.Tensor:
    """p_label of each image, one forward per image (as a chunk of one makes it)."""
    with torch.no_grad():
        return torch.cat([model(x[None]).softmax(-1)[:, label] for x in images])


def make_data(seed: int = 0, batch: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 images in [0.2, 1], coarse random maps (4×4, upsampled), label 1."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.2 + 0.8 * torch.rand(batch, 3, SIZE, SIZE, generator=generator, dtype=torch.float64)
    maps = torch.randn(batch, 4, 4, generator=generator, dtype=torch.float64)
    return images, maps, torch.ones(batch, dtype=torch.long)


@torch.no_grad()
def reference(model: nn.Module, image: torch.Tensor, smap: torch.Tensor, label: int, *,
              necessity: bool, points: int = POINTS) -> tuple[list[float], float]:
    """The definition (ltx/metrics/continuous.py), one image and one intensity at a time: (curve, AUC)."""
    full = F.interpolate(smap.double()[None, None], size=image.shape[-2:], mode="bilinear",
                         align_corners=False)[0, 0] if smap.shape != image.shape[-2:] else smap.double()
    low, high = full.min(), full.max()
    relevance = (full - low) / (high - low) if high > low else torch.full_like(full, 0.5)
    weight = relevance if necessity else 1 - relevance
    ts = [i / (points - 1) for i in range(points)]
    curve = [float(model((image - t * weight * (image - 0.0))[None]).softmax(-1)[0, label]) for t in ts]
    auc = 100 * sum((t1 - t0) * (a + b) / 2 for (t0, t1), (a, b) in zip(pairwise(ts), pairwise(curve)))
    return curve, auc


def per_image(metric: type, model: nn.Module, images: torch.Tensor, maps: torch.Tensor,
              labels: torch.Tensor, **kwargs) -> torch.Tensor:
    m = metric(model, **kwargs)
    m.update(images, maps, labels)
    return m.compute_per_image()


def test_the_regions_map_is_sufficient_and_necessary_its_inverse_neither_random_maps_between() -> None:
    model = RegionModel()
    images, _, labels = make_data()
    evidence = model.region.bool().expand(len(images), -1, -1)
    random_maps = torch.rand(len(images), SIZE, SIZE, generator=torch.Generator().manual_seed(1),
                             dtype=torch.float64)
    suff = {name: per_image(Sufficiency, model, images, maps, labels)
            for name, maps in (("region", evidence), ("inverse", ~evidence), ("random", random_maps))}
    nec = {name: per_image(Necessity, model, images, maps, labels)
           for name, maps in (("region", evidence), ("inverse", ~evidence), ("random", random_maps))}
    assert (suff["region"] > suff["random"]).all() and (suff["random"] > suff["inverse"]).all()
    assert (nec["region"] < nec["random"]).all() and (nec["random"] < nec["inverse"]).all()
    # Exactly: keeping R (sufficiency of R, necessity of its inverse) keeps p(x) at every t; removing
    # R in proportion to t gives p = sigmoid(scale · (1 − t) · Σ_R x̄).
    clean = 100 * probability(model, images)
    torch.testing.assert_close(suff["region"], clean, atol=AUC_ATOL, rtol=0)
    torch.testing.assert_close(nec["inverse"], clean, atol=AUC_ATOL, rtol=0)
    total = model.scale * (images.mean(1) * model.region).sum((1, 2))
    t = torch.linspace(0, 1, POINTS, dtype=torch.float64)
    removed = 100 * torch.trapezoid(torch.sigmoid(total[:, None] * (1 - t)), t, dim=-1)
    torch.testing.assert_close(nec["region"], removed, atol=AUC_ATOL, rtol=0)
    torch.testing.assert_close(suff["inverse"], removed, atol=AUC_ATOL, rtol=0)


@pytest.mark.parametrize("metric", BLENDS, ids=lambda m: m.name)
def test_curves_start_at_the_image_and_end_at_the_baseline_bit_for_bit(metric: type) -> None:
    """t = 0 sends x itself; t = 1 sends b = 0 on the pixels whose m̂ is 1 (necessity; 0 for
    sufficiency) and x on those whose m̂ is 0. Chunks of one: the scores are p(x) and p(b) exactly."""
    model = RegionModel()
    images, _, labels = make_data(batch=3)
    evidence = model.region.bool().expand(len(images), -1, -1)
    m = metric(model, chunk_size=1)
    curves = m.curves(images, evidence, labels)
    seen = torch.cat(model.seen).view(len(images), POINTS, 3, SIZE, SIZE)
    removed = evidence if metric is Necessity else ~evidence
    assert torch.equal(seen[:, 0], images)
    assert torch.equal(seen[:, -1], torch.where(removed[:, None], 0.0, images))
    assert torch.equal(curves[:, 0].double(), probability(model, images))
    if metric is Necessity:  # R is all the model reads: at t = 1 it sees the baseline
        assert torch.equal(curves[:, -1].double(), probability(model, torch.zeros_like(images)))


@pytest.mark.parametrize("metric", BLENDS, ids=lambda m: m.name)
def test_metrics_match_the_definition_one_image_and_intensity_at_a_time(metric: type) -> None:
    model = RegionModel()
    images, maps, labels = make_data()
    maps[2] = 3.0  # constant: m̂ = 0.5
    maps[3] = maps[3].abs().neg()  # negative values: only the min-max scaling matters
    labels[1] = 0
    expected = [reference(model, x, s, int(y), necessity=metric is Necessity)
                for x, s, y in zip(images, maps, labels)]
    m = metric(model, chunk_size=5)
    m.update(images, maps, labels)
    aucs = torch.tensor([auc for _, auc in expected], dtype=torch.float64)
    torch.testing.assert_close(m.compute_per_image(), aucs, atol=AUC_ATOL, rtol=0)
    curves = torch.tensor([curve for curve, _ in expected], dtype=torch.float64)
    torch.testing.assert_close(m.compute_curve(), curves.mean(0), atol=4 * 16 * EPS64, rtol=0)
    assert 0 < float(m.compute()) < 100


@pytest.mark.parametrize("metric", BLENDS, ids=lambda m: m.name)
def test_batched_equals_one_by_one_whatever_the_chunk_size(metric: type) -> None:
    model = RegionModel()
    images, maps, labels = make_data(seed=2)
    whole = metric(model, chunk_size=1000)
    whole.update(images, maps, labels)
    for chunk_size in (1, 7):  # 7 does not divide the 11 intensities: chunks straddle images
        one_by_one = metric(model, chunk_size=chunk_size)
        for j in range(len(images)):
            one_by_one.update(images[j:j + 1], maps[j:j + 1], labels[j:j + 1])
        torch.testing.assert_close(one_by_one.compute_per_image(), whole.compute_per_image(),
                                   atol=AUC_ATOL, rtol=0)
        torch.testing.assert_close(one_by_one.compute_curve(), whole.compute_curve(), atol=AUC_ATOL, rtol=0)


def test_a_constant_map_is_one_half_everywhere_and_as_sufficient_as_necessary() -> None:
    model = RegionModel()
    images, _, labels = make_data(batch=4)
    constants = [torch.zeros(4, SIZE, SIZE), torch.full((4, 2, 2), 7.5, dtype=torch.float64),
                 torch.ones(4, SIZE, SIZE, dtype=torch.bool)]
    for maps in constants:
        assert torch.equal(normalised_relevance(maps, (SIZE, SIZE)), torch.full((4, SIZE * SIZE), 0.5,
                                                                                 dtype=torch.float64))
        suff, nec = (per_image(metric, model, images, maps, labels) for metric in BLENDS)
        assert torch.equal(suff, nec)
    half = 0.5 * torch.linspace(0, 1, POINTS, dtype=torch.float64)
    dimmed = 100 * torch.trapezoid(torch.stack([probability(model, images * (1 - h)) for h in half], 1),
                                   torch.linspace(0, 1, POINTS, dtype=torch.float64), dim=-1)
    torch.testing.assert_close(suff, dimmed, atol=AUC_ATOL, rtol=0)


def test_values_of_the_map_matter_up_to_positive_affine_rescaling() -> None:
    """Unlike the rank-based metrics: a·s + c (a > 0) gives the same values, a monotone s³ does not."""
    model = RegionModel()
    images, maps, labels = make_data(seed=3)
    for metric in BLENDS:
        base = per_image(metric, model, images, maps, labels)
        torch.testing.assert_close(per_image(metric, model, images, 3 * maps - 2, labels), base,
                                   atol=AUC_ATOL, rtol=0)
        assert not torch.allclose(per_image(metric, model, images, maps ** 3, labels), base)


def test_normalised_relevance_spans_zero_to_one_exactly() -> None:
    maps = torch.randn(5, 3, 3, generator=torch.Generator().manual_seed(4))
    relevance = normalised_relevance(maps, (SIZE, SIZE))
    assert relevance.shape == (5, SIZE * SIZE) and relevance.dtype == torch.float64
    assert (relevance.amin(1) == 0).all() and (relevance.amax(1) == 1).all()


def test_the_suite_costs_two_runs_of_points_per_image_never_shared() -> None:
    """conf/eval/continuous.yaml builds both metrics with T = 11: 2·T forwards per image (its
    comment), one run per metric, none shared with each other or with the paper's curves."""
    model = RegionModel()
    cfg = compose_config(["eval=continuous"])
    metrics = build_metrics(cfg.eval, model)
    assert list(metrics) == ["sufficiency", "necessity"] and all(m.points == POINTS for m in metrics.values())
    suite = PerturbationSuite({**metrics, "del": create_metric("del", model)})
    assert suite.runs(SIZE, SIZE) == [["sufficiency"], ["necessity"], ["del"]]
    assert suite.passes_per_run(SIZE, SIZE) == [POINTS, POINTS, 10]
    images, maps, labels = make_data(batch=2)
    suite.update(images, maps, labels)
    assert sum(len(x) for x in model.seen) == 2 * (2 * POINTS + 10)


def test_registry_metadata_and_bad_settings() -> None:
    assert METRICS["sufficiency"] is Sufficiency and METRICS["necessity"] is Necessity
    assert (Sufficiency.higher_is_better, Necessity.higher_is_better) == (True, False)
    assert Sufficiency.auc_scale == Necessity.auc_scale == 100.0
    three = create_metric("necessity", RegionModel(), points=3)
    assert three.schedule(SIZE, SIZE).tolist() == three.schedule_x(3).tolist() == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="points"):
        Sufficiency(RegionModel(), points=1)

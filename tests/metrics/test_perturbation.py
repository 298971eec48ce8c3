"""Perturbation metrics: hand-computed values, parity with a plain per-image per-step loop,
chunking, batching, input handling, and the registry."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ltx.metrics import (
    METRICS,
    Deletion,
    DeletionRISE,
    Insertion,
    InsertionRISE,
    Necessity,
    NegativePerturbation,
    PositivePerturbation,
    Sufficiency,
    create_metric,
    per_image_auc,
)
from ltx.metrics.perturbation import saliency_ranks
from ltx.metrics.rise import rise_blur_kernel

PAPER = (PositivePerturbation, NegativePerturbation, Insertion, Deletion)
RISE = (InsertionRISE, DeletionRISE)
BLEND = (Sufficiency, Necessity)  # their own tests: tests/metrics/test_continuous.py


# --- an analytic model ------------------------------------------------------------------------------

class RegionModel(nn.Module):
    """logit_c = scale · Σ_{p ∈ R_c} mean_channels(x[:, p]): on an all-ones image, scale times the
    number of pixels of region R_c (flat indices) not yet blacked out."""

    def __init__(self, regions: list[range], size: int = 10, scale: float = 0.1) -> None:
        super().__init__()
        masks = torch.zeros(len(regions), size * size)
        for c, region in enumerate(regions):
            masks[c, list(region)] = 1.0
        self.register_buffer("masks", masks)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.mean(1).flatten(1) @ self.masks.T


# 10×10 all-ones image, label 1. R_0 = flat 0..24 (25 px), R_1 = flat 60..99 (40 px).
REGIONS = [range(25), range(60, 100)]
# Perfect map for label 1: 1 on R_1, 0 elsewhere. Step i blacks out the first 10·i pixels.
# Descending (POS, DEL) order: 60..99, then 0..59 → kept (|R_0|, |R_1|) at each step:
DESCENDING_KEPT = [(25, 40), (25, 30), (25, 20), (25, 10), (25, 0), (15, 0), (5, 0), (0, 0), (0, 0), (0, 0)]
# Ascending (NEG, INS) order: 0..59 (ties, index order), then 60..99:
ASCENDING_KEPT = [(25, 40), (15, 40), (5, 40), (0, 40), (0, 40), (0, 40), (0, 40), (0, 30), (0, 20), (0, 10)]


def hit(kept: tuple[int, int]) -> float:
    """Label 1 is the argmax iff |R_1| > |R_0| (a tie goes to the first index, class 0)."""
    return float(kept[1] > kept[0])


def prob(kept: tuple[int, int]) -> float:
    """Softmax probability of class 1 with logits 0.1·|R_c|: a sigmoid of their difference."""
    return 1.0 / (1.0 + math.exp(-0.1 * (kept[1] - kept[0])))


# RegionModel's float32 probabilities: a logit 0.1·n (n ≤ 40 exact) is 0.1 rounded to float32
# times n, rounded: |δl| ≤ |l|·eps32 ≤ 4·eps32; softmax of two such logits: |δp| ≤ p(1 − p)·|δ(l_1 −
# l_0)| + 2·eps32·p ≤ 0.25·8·eps32 + 2·eps32 = 4·eps32 against the float64 `prob`. An AUC
# 100·Σ 0.1·(a_i + a_{i+1})/2 weighs the 10 values by 100·0.9 in all: 90 times that.
PROB_ATOL = 4 * torch.finfo(torch.float32).eps
PROB_AUC_ATOL = 90 * PROB_ATOL


def paper_auc(curve: list[float]) -> float:
    """100 × trapezoid over r = 0, 0.1, …, 0.9."""
    return 100 * sum(0.1 * (a + b) / 2 for a, b in pairwise(curve))


def analytic_value(metric: type, saliency: torch.Tensor) -> float:
    model = RegionModel(REGIONS)
    m = metric(model)
    m.update(torch.ones(1, 3, 10, 10), saliency, torch.tensor([1]))
    return float(m.compute())


def perfect_map() -> torch.Tensor:
    s = torch.zeros(1, 100)
    s[0, 60:] = 1
    return s.view(1, 10, 10)


def test_analytic_perfect_map() -> None:
    s = perfect_map()
    assert paper_auc([hit(k) for k in DESCENDING_KEPT]) == pytest.approx(15.0)  # hits 1, 1, 0, …
    assert analytic_value(PositivePerturbation, s) == pytest.approx(15.0)
    assert analytic_value(NegativePerturbation, s) == pytest.approx(90.0)
    assert analytic_value(Deletion, s) == pytest.approx(paper_auc([prob(k) for k in DESCENDING_KEPT]),
                                                        abs=PROB_AUC_ATOL, rel=0)
    assert analytic_value(Insertion, s) == pytest.approx(paper_auc([prob(k) for k in ASCENDING_KEPT]),
                                                         abs=PROB_AUC_ATOL, rel=0)


def test_analytic_reversed_map() -> None:
    """1 − perfect: its descending order is the perfect map's ascending one, and vice versa."""
    s = 1 - perfect_map()
    assert analytic_value(PositivePerturbation, s) == pytest.approx(90.0)
    assert analytic_value(NegativePerturbation, s) == pytest.approx(15.0)
    assert analytic_value(Deletion, s) == pytest.approx(paper_auc([prob(k) for k in ASCENDING_KEPT]),
                                                        abs=PROB_AUC_ATOL, rel=0)
    assert analytic_value(Insertion, s) == pytest.approx(paper_auc([prob(k) for k in DESCENDING_KEPT]),
                                                         abs=PROB_AUC_ATOL, rel=0)


def test_ties_go_to_lower_flat_index_in_both_directions() -> None:
    """A constant map removes pixels 0, 1, 2, … for POS *and* NEG (= ASCENDING_KEPT): all hits.
    Higher-index-first ties (e.g. a reversed argsort) would remove R_1 first and give 15."""
    s = torch.zeros(1, 10, 10)
    assert analytic_value(PositivePerturbation, s) == pytest.approx(90.0)
    assert analytic_value(NegativePerturbation, s) == pytest.approx(90.0)
    expected = paper_auc([prob(k) for k in ASCENDING_KEPT])
    assert analytic_value(Deletion, s) == pytest.approx(expected, abs=PROB_AUC_ATOL, rel=0)
    assert analytic_value(Insertion, s) == pytest.approx(expected, abs=PROB_AUC_ATOL, rel=0)


def test_curve_and_per_image_values() -> None:
    m = Deletion(RegionModel(REGIONS))
    m.update(torch.ones(2, 3, 10, 10), torch.cat([perfect_map(), 1 - perfect_map()]), torch.tensor([1, 1]))
    first = torch.tensor([prob(k) for k in DESCENDING_KEPT], dtype=torch.float64)
    second = torch.tensor([prob(k) for k in ASCENDING_KEPT], dtype=torch.float64)
    # float32 probabilities against float64 ones: bounds from PROB_ATOL (not float64's 1e-7).
    torch.testing.assert_close(m.compute_curve(), (first + second) / 2, atol=PROB_ATOL, rtol=0)
    expected = torch.tensor([paper_auc(first.tolist()), paper_auc(second.tolist())], dtype=torch.float64)
    torch.testing.assert_close(m.compute_per_image(), expected, atol=PROB_AUC_ATOL, rtol=0)
    torch.testing.assert_close(m.compute(), expected.mean(), atol=PROB_AUC_ATOL, rtol=0)


def test_pixel_counts_use_exact_arithmetic() -> None:
    """int(0.7 · 90) is 62 in floating point; the protocol's k = ⌊r·H·W⌋ is 63."""
    model = RegionModel(REGIONS)
    assert PositivePerturbation(model).schedule(9, 10).tolist() == [0, 9, 18, 27, 36, 45, 54, 63, 72, 81]
    floats = [i * 0.1 for i in range(10)]  # 0.30000000000000004, …: read as the decimals they print as
    for height, width in [(9, 10), (17, 10), (224, 224), (13, 7)]:
        expected = [math.floor(Fraction(i, 10) * height * width) for i in range(10)]
        assert PositivePerturbation(model).schedule(height, width).tolist() == expected
        assert PositivePerturbation(model, fractions=floats).schedule(height, width).tolist() == expected


# --- a random model for parity ------------------------------------------------------------------------

class TinyNet(nn.Module):
    """A small random conv net on [0, 1] images that normalises inside, with mean/std buffers."""

    def __init__(self, num_classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv((x - self.mean) / self.std))
        return 3 * self.fc(F.adaptive_avg_pool2d(h, 2).flatten(1))


Data = tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]


def make_data(dtype: torch.dtype) -> Data:
    """12×12 images (H·W = 144: r·H·W is not an integer), continuous and tie-heavy maps, labels
    = f's top-1 for half of the images so that curves start at 1."""
    model = TinyNet().to(dtype).eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(6, 3, 12, 12, generator=generator, dtype=dtype)
    maps = torch.rand(6, 12, 12, generator=generator, dtype=torch.float64)
    maps[3:] = torch.randint(0, 3, (3, 12, 12), generator=generator).double()
    labels = torch.randint(0, 5, (6,), generator=generator)
    with torch.no_grad():
        labels[::2] = model(images[::2]).argmax(-1)
    return model, images, maps, labels


@pytest.fixture
def data() -> Data:
    return make_data(torch.float32)


@pytest.fixture
def data64() -> Data:
    """float64 model and images: batched and one-at-a-time forwards then agree to ~1e-15."""
    return make_data(torch.float64)


def order_of(values: list[float], descending: bool) -> list[int]:
    """Pixel order by value, ties by lower flat index, with Python's sort."""
    return sorted(range(len(values)), key=lambda p: (-values[p] if descending else values[p], p))


@torch.no_grad()
def reference_paper(model: nn.Module, image: torch.Tensor, smap: torch.Tensor, label: int, *,
                    descending: bool, score: str) -> float:
    """The protocol, one image and one step at a time."""
    _, height, width = image.shape
    order = order_of(smap.flatten().tolist(), descending)
    curve = []
    for i in range(10):
        k = math.floor(Fraction(i, 10) * height * width)
        x = image.clone()
        x.view(3, -1)[:, order[:k]] = 0.0
        logits = model(x[None])[0]
        curve.append(float(logits.argmax() == label) if score == "hit" else float(logits.softmax(-1)[label]))
    return paper_auc(curve)


@torch.no_grad()
def reference_rise(model: TinyNet, image: torch.Tensor, smap: torch.Tensor, *, insertion: bool,
                   step: int) -> float:
    """RISE's `CausalMetric.single_run`, in normalised space as RISE works (blur with its
    (3, 3, 11, 11) diagonal kernel, zero padding), scored on the original's top-1 class."""
    _, height, width = image.shape
    pixels = height * width
    n = (pixels + step - 1) // step
    normalised = (image - model.mean[0]) / model.std[0]
    kernel = torch.zeros(3, 3, 11, 11, dtype=image.dtype)
    for c in range(3):
        kernel[c, c] = rise_blur_kernel()
    if insertion:
        start, finish = F.conv2d(normalised[None], kernel, padding=5)[0], normalised.clone()
    else:
        start, finish = normalised.clone(), torch.zeros_like(normalised)
    top = int(model(image[None]).argmax())
    order = order_of(smap.flatten().tolist(), descending=True)
    scores = []
    for i in range(n + 1):
        pixel_space = start * model.std[0] + model.mean[0]
        scores.append(float(model(pixel_space[None]).softmax(-1)[0, top]))
        coords = order[step * i: step * (i + 1)]
        start.view(3, -1)[:, coords] = finish.view(3, -1)[:, coords]
    return (sum(scores) - scores[0] / 2 - scores[-1] / 2) / n


@pytest.mark.parametrize("metric", PAPER, ids=lambda m: m.name)
def test_paper_metrics_match_reference_loop(metric: type, data64: Data) -> None:
    model, images, maps, labels = data64
    expected = torch.tensor([
        reference_paper(model, x, s, int(y), descending=metric.descending, score=metric.score)
        for x, s, y in zip(images, maps, labels)], dtype=torch.float64)
    m = metric(model, chunk_size=7)
    m.update(images, maps, labels)
    torch.testing.assert_close(m.compute_per_image(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(m.compute(), expected.mean(), atol=1e-6, rtol=0)
    assert 0 < float(m.compute()) < 90  # not a degenerate case


@pytest.mark.parametrize("metric", RISE, ids=lambda m: m.name)
def test_rise_metrics_match_reference_loop(metric: type, data64: Data) -> None:
    model, images, maps, labels = data64
    insertion = metric is InsertionRISE
    expected = torch.tensor([reference_rise(model, x, s, insertion=insertion, step=10)
                             for x, s in zip(images, maps)], dtype=torch.float64)
    m = metric(model, step=10, chunk_size=16)  # 144 px: 15 steps, the last of 4 px
    m.update(images, maps, labels)
    assert m.compute_curve().shape == (16,)
    torch.testing.assert_close(m.compute_per_image(), expected, atol=1e-6, rtol=0)


def test_rise_blur_kernel_is_scipys() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    import numpy as np

    delta = np.zeros((11, 11))
    delta[5, 5] = 1
    torch.testing.assert_close(rise_blur_kernel(), torch.from_numpy(ndimage.gaussian_filter(delta, 5)))


@pytest.mark.parametrize("metric", PAPER + RISE + BLEND, ids=lambda m: m.name)
def test_chunk_size_does_not_change_results(metric: type, data64: Data) -> None:
    model, images, maps, labels = data64
    results = []
    for chunk_size in (1, 1000):
        m = metric(model, chunk_size=chunk_size)
        m.update(images, maps, labels)
        results.append((m.compute_curve(), m.compute_per_image()))
    torch.testing.assert_close(results[0], results[1], atol=1e-9, rtol=0)


@pytest.mark.parametrize("metric", PAPER + RISE + BLEND, ids=lambda m: m.name)
def test_two_batches_equal_their_concatenation(metric: type, data64: Data) -> None:
    model, images, maps, labels = data64
    split, whole = metric(model), metric(model)
    split.update(images[:4], maps[:4], labels[:4])
    split.update(images[4:], maps[4:], labels[4:])
    whole.update(images, maps, labels)
    torch.testing.assert_close(split.compute(), whole.compute(), atol=1e-9, rtol=0)
    torch.testing.assert_close(split.compute_curve(), whole.compute_curve(), atol=1e-9, rtol=0)
    torch.testing.assert_close(split.compute_per_image(), whole.compute_per_image(), atol=1e-9, rtol=0)


@pytest.mark.parametrize("kind", ["pos", "ins", "del_rise", "road_morf_prob", "necessity"])
def test_update_curves_with_the_curves_of_update_gives_its_state(kind: str, data: Data) -> None:
    """The per-image curves of earlier scoring added later: what the evaluation does with images
    it scored before (the same values, bit for bit, in update order)."""
    model, images, maps, labels = data
    updated, added = create_metric(kind, model), create_metric(kind, model)
    scorer = create_metric(kind, model)  # where the curves come from: not `added` itself
    updated.update(images[:4], maps[:4], labels[:4])
    added.update_curves(scorer.curves(images[:4], maps[:4], labels[:4]))
    torch.testing.assert_close(added.compute(), updated.compute(), atol=0, rtol=0)
    updated.update(images[4:], maps[4:], labels[4:])
    added.update_curves(scorer.curves(images[4:], maps[4:], labels[4:]))
    assert added.update_count == updated.update_count == 2
    assert scorer.update_count == 0  # `curves` leaves the state alone
    for value in ("compute", "compute_curve", "compute_per_image"):  # compute's cached value is not stale
        assert torch.equal(getattr(added, value)(), getattr(updated, value)()), value


def test_update_curves_rejects_curves_of_another_shape(data: Data) -> None:
    model, images, maps, labels = data
    m = DeletionRISE(model, step=10)
    curves = m.curves(images, maps, labels)
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        m.update_curves(curves[0])
    m.update_curves(curves)
    with pytest.raises(ValueError, match="image size"):
        m.update_curves(curves[:, :-1])


@pytest.mark.parametrize("kind", ["pos", "neg", "ins", "del", "del_rise"])
def test_per_image_auc_matches_the_metric_on_single_images(kind: str, data64: Data) -> None:
    model, images, maps, labels = data64
    batched = per_image_auc(model, images, maps, labels, kind=kind)
    assert batched.shape == (len(images),) and not batched.is_inference()
    for j in range(len(images)):
        m = create_metric(kind, model)
        m.update(images[j:j + 1], maps[j:j + 1], labels[j:j + 1])
        torch.testing.assert_close(batched[j], m.compute(), atol=1e-9, rtol=0)


def test_per_image_auc_rejects_unknown_kind(data: Data) -> None:
    model, images, maps, labels = data
    with pytest.raises(ValueError, match="pos"):
        per_image_auc(model, images, maps, labels, kind="auc")


# --- input handling --------------------------------------------------------------------------------

def test_only_the_ranking_of_the_map_matters(data: Data) -> None:
    model, images, _, labels = data
    base = torch.randint(0, 4, (6, 12, 12), generator=torch.Generator().manual_seed(2))
    variants = [base.double(), base, base.to(torch.uint8), base.float() * 1000, base.double() + 7.5,
                base[:, None].float()]
    for metric in PAPER + RISE:
        values = []
        for saliency in variants:
            m = metric(model)
            m.update(images, saliency, labels)
            values.append(m.compute_per_image())
        for other in values[1:]:
            assert torch.equal(values[0], other), metric.name


@pytest.mark.parametrize("metric", [Deletion, InsertionRISE], ids=lambda m: m.name)
def test_low_resolution_maps_are_upsampled_bilinearly(metric: type, data: Data) -> None:
    model, images, _, labels = data
    low = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    full = F.interpolate(low, size=(12, 12), mode="bilinear", align_corners=False)[:, 0]
    for descending in (True, False):
        assert torch.equal(saliency_ranks(low, (12, 12), descending=descending),
                           saliency_ranks(full, (12, 12), descending=descending))
    a, b = metric(model), metric(model)
    a.update(images, low, labels)
    b.update(images, full, labels)
    assert torch.equal(a.compute_per_image(), b.compute_per_image())


@pytest.mark.parametrize("metric", PAPER + RISE + BLEND, ids=lambda m: m.name)
def test_inputs_are_not_modified(metric: type, data: Data) -> None:
    model, images, maps, labels = data
    copies = images.clone(), maps.clone(), labels.clone()
    metric(model).update(images, maps, labels)
    for original, copy in zip((images, maps, labels), copies):
        assert torch.equal(original, copy)


def test_update_inside_and_outside_inference_mode(data: Data) -> None:
    """Lightning validation calls update under inference_mode; compute and later updates run outside."""
    model, images, maps, labels = data
    inside, outside = PositivePerturbation(model), PositivePerturbation(model)
    with torch.inference_mode():
        inside.update(images[:3], maps[:3], labels[:3])
    inside.update(images[3:], maps[3:], labels[3:])
    outside.update(images, maps, labels)
    torch.testing.assert_close(inside.compute(), outside.compute())


@pytest.mark.parametrize("metric", [NegativePerturbation, DeletionRISE], ids=lambda m: m.name)
def test_forward_returns_the_batch_value_and_accumulates(metric: type, data: Data) -> None:
    model, images, maps, labels = data
    m, single = metric(model), metric(model)
    batch_value = m(images[:2], maps[:2], labels[:2])
    single.update(images[:2], maps[:2], labels[:2])
    torch.testing.assert_close(batch_value, single.compute())
    m(images[2:], maps[2:], labels[2:])
    single.update(images[2:], maps[2:], labels[2:])
    torch.testing.assert_close(m.compute(), single.compute())
    torch.testing.assert_close(m.compute_curve(), single.compute_curve())


def test_metric_does_not_own_the_model(data: Data) -> None:
    """Checkpoints of modules holding a metric must not get f's weights twice."""
    model, *_ = data
    m = PositivePerturbation(model)
    assert list(m.parameters()) == [] and not any("conv" in k for k in m.state_dict())
    assert m.model is model


def test_bad_inputs_are_rejected(data: Data) -> None:
    model, images, maps, labels = data
    with pytest.raises(ValueError, match="fractions"):
        PositivePerturbation(model, fractions=[0.5, 0.1])
    with pytest.raises(ValueError, match="saliency"):
        PositivePerturbation(model).update(images, maps[:, None, None], labels)
    with pytest.raises(ValueError, match="batch"):
        PositivePerturbation(model).update(images, maps[:2], labels)
    with pytest.raises(ValueError, match="mean"):
        InsertionRISE(nn.Linear(2, 2))
    rise = DeletionRISE(model, step=10)
    rise.update(images, maps, labels)
    with pytest.raises(ValueError, match="image size"):
        rise.update(images[..., :10, :10], maps[..., :10, :10], labels)


# --- registry --------------------------------------------------------------------------------------

def test_registry_builds_every_metric_by_name(data: Data) -> None:
    model, *_ = data
    assert set(METRICS) == {"pos", "neg", "ins", "del", "ins_rise", "del_rise",
                            "road_morf_acc", "road_lerf_acc", "road_morf_prob", "road_lerf_prob",
                            "contrastive_pos", "contrastive_neg", "contrastive_ins", "contrastive_del",
                            "sufficiency", "necessity", "pointing_game", "energy_pointing_game", "gt_auroc"}
    for name, cls in METRICS.items():
        metric = create_metric(name, model)
        assert isinstance(metric, cls) and metric.name == name
        assert isinstance(cls.higher_is_better, bool) and cls.description
    assert [METRICS[n].higher_is_better for n in ("pos", "neg", "ins", "del", "ins_rise", "del_rise")] == [
        False, True, True, False, True, False]
    assert create_metric("pos", model, chunk_size=7).chunk_size == 7


def test_registry_rejects_unknown_names_and_missing_models() -> None:
    with pytest.raises(ValueError, match="gt_auroc"):
        create_metric("insertion")
    with pytest.raises(ValueError, match="model"):
        create_metric("pos")

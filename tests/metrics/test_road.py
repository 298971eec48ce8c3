"""ROAD: the noisy linear imputation (exact on ramps, equal to the reference implementations),
the metrics against pytorch-grad-cam's ROAD, batching, chunking, DDP-style state, seeding, and
an oracle on a model that reads its class inside a known region.

Error budgets. The solver stops a system once its largest |D⁻¹r| is at most
thr = tol / (H² + W²), so its error is at most T·thr with T = ‖(D⁻¹M)⁻¹‖∞ the largest mean exit
time of the imputation's random walk (ltx/metrics/road.py); the tests compute T exactly with a
dense solve of the same system, built here pixel by pixel (`reference_system`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ltx.metrics import METRICS, create_metric
from ltx.metrics.perturbation import PAPER_FRACTIONS, saliency_ranks
from ltx.metrics.road import (
    ROADCurve,
    ROADLeRFAccuracy,
    ROADLeRFProbability,
    ROADMoRFAccuracy,
    ROADMoRFProbability,
    banded_cholesky,
    conjugate_gradients,
    image_noise,
    linear_imputation,
    stopping_threshold,
)

ROAD = (ROADMoRFAccuracy, ROADLeRFAccuracy, ROADMoRFProbability, ROADLeRFProbability)
EPS32, EPS64 = torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps  # 2^-23, 2^-52
TIGHT = 1e-9  # the solver's tol in parity tests: T·thr stays below a float32 ulp


# --- an independent dense reference of the linear system ----------------------------------------

NEIGHBOURS = [((dy, dx), 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
              for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def reference_system(removed: torch.Tensor) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """(removed pixels, the matrix D − W_RR, the weights W_RK to known pixels (n, H·W)), float64."""
    height, width = removed.shape
    pixels = [(y, x) for y in range(height) for x in range(width) if removed[y, x]]
    index = {p: i for i, p in enumerate(pixels)}
    matrix = np.zeros((len(pixels), len(pixels)))
    to_known = np.zeros((len(pixels), height * width))
    for i, (y, x) in enumerate(pixels):
        for (dy, dx), w in NEIGHBOURS:
            ny, nx = y + dy, x + dx
            if 0 <= ny < height and 0 <= nx < width:
                matrix[i, i] += w
                if (ny, nx) in index:
                    matrix[i, index[ny, nx]] -= w
                else:
                    to_known[i, ny * width + nx] = w
    return pixels, matrix, to_known


def reference_imputation(image: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """The exact solution (float64 dense solve) for one image (C, H, W)."""
    pixels, matrix, to_known = reference_system(removed)
    out = image.double().clone()
    if pixels:
        values = np.linalg.solve(matrix, to_known @ image.double().flatten(1).numpy().T)
        for i, (y, x) in enumerate(pixels):
            out[:, y, x] = torch.from_numpy(values[i])
    return out


def exit_time(removed: torch.Tensor) -> float:
    """T = ‖(D⁻¹M)⁻¹‖∞ = max_i E_i[steps of the walk before it reaches a known pixel]."""
    pixels, matrix, _ = reference_system(removed)
    if not pixels:
        return 0.0
    degree = np.diag(matrix).copy()
    return float(np.linalg.solve(matrix / degree[:, None], np.ones(len(pixels))).max())


def solver_bound(removed: torch.Tensor, tol: float) -> float:
    """Largest error of `linear_imputation(..., tol)` on this mask: T·thr, plus T·64·eps64 for
    the float64 drift of the recursive residual (a few eps per iteration, < 16 iterations per
    decade of residual here)."""
    height, width = removed.shape
    return exit_time(removed) * (stopping_threshold(height, width, tol) + 64 * EPS64)


def gradcam_bound(removed: torch.Tensor) -> float:
    """Largest difference between our float32 imputation and grad-cam's NoisyLinearImputer (it
    needs float32 images). Under numpy 2 (NEP 50) it forms each right-hand-side term w·v in
    float32 (1/6 and 1/12 rounded to float32, then the product: relative error ≤ eps32) and
    sums them in float64, so |δb_i| ≤ eps32 · d_i · max|v| and, solving exactly (direct LU,
    error ~ cond·eps64), its solution is off by ≤ T·eps32 (v ≤ 1); each side then rounds to
    float32 (≤ eps32/4 at values < 1), ours after the solver bound."""
    return solver_bound(removed, TIGHT) + exit_time(removed) * EPS32 + EPS32 / 2


def mask_from_ranks(saliency: torch.Tensor, k: int, descending: bool) -> torch.Tensor:
    height, width = saliency.shape
    return (saliency_ranks(saliency[None], (height, width), descending=descending) < k).view(height, width)


# --- the imputation ------------------------------------------------------------------------------

def ramp(height: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    """Three linear ramps a·y + b·x + c in [0, 1] (one per channel, different slopes)."""
    y = torch.arange(height, dtype=torch.float64)[:, None] / (height - 1)
    x = torch.arange(width, dtype=torch.float64)[None] / (width - 1)
    channels = [0.5 * y + 0.5 * x, 0.8 * y + 0.1 + 0 * x, 0.2 + 0.3 * x - 0.2 * y]
    return torch.stack(channels).to(dtype)


def test_interior_holes_of_a_ramp_are_filled_with_the_ramp() -> None:
    """The symmetric stencil reproduces linear functions at pixels whose 8 neighbours are all in
    the image (at the border, the renormalised one-sided mean does not, in the reference too)."""
    height, width = 12, 15
    image = ramp(height, width, torch.float64)
    generator = torch.Generator().manual_seed(0)
    removed = torch.zeros(height, width, dtype=torch.bool)
    removed[1:-1, 1:-1] = torch.rand(height - 2, width - 2, generator=generator) < 0.6
    removed[3:9, 4:12] = True  # and a large hole
    out = linear_imputation(image[None], removed[None], tol=TIGHT)[0]
    bound = solver_bound(removed, TIGHT)
    assert bound < 1e-8  # the budget is meaningful
    torch.testing.assert_close(out, image, atol=bound, rtol=0)
    assert not torch.equal(linear_imputation(image[None], removed[None], tol=1e-2)[0], image)  # can fail


def test_known_pixels_are_unchanged_and_values_stay_within_the_known_range() -> None:
    """Noise-free values are convex combinations of known pixels (the reference does not clip:
    only the noise can leave [0, 1])."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 10, 13, generator=generator)
    fractions = torch.tensor([0.1, 0.5, 0.9, 0.99]).view(4, 1, 1, 1)
    removed = torch.rand(4, 1, 10, 13, generator=generator) < fractions
    out = linear_imputation(images, removed, tol=TIGHT)
    assert out.dtype == torch.float32
    assert torch.equal(out[~removed.expand_as(out)], images[~removed.expand_as(images)])
    for j in range(4):
        known = images[j][:, ~removed[j, 0]]
        low, high = known.min(1).values.view(3, 1, 1), known.max(1).values.view(3, 1, 1)
        # a float32 rounding of a value within the solver's bound of [low, high]
        slack = solver_bound(removed[j, 0], TIGHT) + EPS32
        assert ((out[j] >= low - slack) & (out[j] <= high + slack)).all()


def test_imputation_equals_a_dense_solve_and_is_batch_independent() -> None:
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(3, 3, 9, 11, generator=generator, dtype=torch.float64)
    removed = torch.rand(3, 9, 11, generator=generator) < torch.tensor([0.3, 0.7, 0.9]).view(3, 1, 1)
    batched = linear_imputation(images, removed, tol=TIGHT)
    for j in range(3):
        alone = linear_imputation(images[j:j + 1], removed[j:j + 1], tol=TIGHT)[0]
        assert torch.equal(alone, batched[j])  # per-system iterations: bit for bit
        torch.testing.assert_close(batched[j], reference_imputation(images[j], removed[j]),
                                   atol=solver_bound(removed[j], TIGHT), rtol=0)


def test_no_pixel_removed_or_all_removed() -> None:
    image = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(linear_imputation(image, torch.zeros(1, 6, 6, dtype=torch.bool)), image)
    everything = torch.ones(1, 6, 6, dtype=torch.bool)
    assert torch.equal(linear_imputation(image, everything), torch.zeros_like(image))


def test_non_convergence_raises_and_both_solvers_agree() -> None:
    """A single known pixel is the slowest case for CG (the solver off the CPU): 3 iterations
    are not enough, and a solver that gives up makes `linear_imputation` raise."""
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    removed = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    removed[0, 0, 0, 0] = False
    threshold = stopping_threshold(16, 16, TIGHT)
    known = torch.where(removed, 0.0, image)
    assert not conjugate_gradients(known.clone(), removed, threshold, max_iter=3)
    with pytest.raises(RuntimeError, match="max_iter"):
        linear_imputation(image, removed, max_iter=0)
    by_cg, by_cholesky = known.clone(), known.clone()
    assert conjugate_gradients(by_cg, removed, threshold, max_iter=20 * 32)
    assert banded_cholesky(by_cholesky, removed, threshold, max_iter=20 * 32)
    # each within solver_bound of the exact solution
    torch.testing.assert_close(by_cg, by_cholesky, atol=2 * solver_bound(removed[0, 0], TIGHT), rtol=0)


GRAD_CAM_NUMPY_WARNING = "ignore:__array_wrap__ must accept context:DeprecationWarning"


@pytest.mark.filterwarnings(GRAD_CAM_NUMPY_WARNING)
@pytest.mark.parametrize("size", [(7, 11), (16, 16)])
def test_imputation_matches_pytorch_grad_cam(size: tuple[int, int]) -> None:
    """grad-cam's NoisyLinearImputer (the authors' code) with noise 0, on random and ranked masks,
    borders included, within `gradcam_bound`."""
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    height, width = size
    generator = torch.Generator().manual_seed(5)
    imputer = road.NoisyLinearImputer(noise=0)
    saliency = torch.rand(height, width, generator=generator)
    masks = [torch.rand(height, width, generator=generator) < r for r in (0.2, 0.6, 0.9)]
    counts = (height * width // 2, 9 * height * width // 10)
    masks += [mask_from_ranks(saliency, k, descending) for k in counts
              for descending in (True, False)]
    for removed in masks:
        image = torch.rand(3, height, width, generator=generator)
        theirs = imputer(image, (~removed).float())
        ours = linear_imputation(image[None], removed[None], tol=TIGHT)[0]
        bound = gradcam_bound(removed)
        assert bound < 1e-4  # meaningful: imputed values differ by ~0.1 between neighbours here
        torch.testing.assert_close(ours, theirs, atol=bound, rtol=0)


# --- the metrics against pytorch-grad-cam ----------------------------------------------------------

class LinearNet(nn.Module):
    """logits = W·x + b in float64 on [0, 1] images of any dtype (|Δ logit_c| ≤ ‖W_c‖₁ · max|Δx|)."""

    def __init__(self, size: tuple[int, int] = (10, 10), classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.linear = nn.Linear(3 * size[0] * size[1], classes).double()
        with torch.no_grad():
            self.linear.weight.copy_(0.1 * torch.randn(self.linear.weight.shape, generator=generator,
                                                       dtype=torch.float64))
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.double().flatten(1))


class Hit:
    """A grad-cam target: 1 if the top-1 class is `label`."""

    def __init__(self, label: int) -> None:
        self.label = label

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return (output.argmax(-1) == self.label).double()


@pytest.mark.filterwarnings(GRAD_CAM_NUMPY_WARNING)
@pytest.mark.parametrize("metric", ROAD, ids=lambda m: m.name)
def test_curves_match_pytorch_grad_cam_without_noise(metric: type) -> None:
    """grad-cam's ROAD (PerturbationConfidenceMetric + Remove{Most,Least}RelevantFirst with the
    noise-free NoisyLinearImputer) at its percentiles p = 90, …, 10, which keep p % of the pixels.
    On 10×10 images with distinct map values its `cam < percentile(cam, p)` keeps exactly p pixels,
    so it removes our k = ⌊r·100⌋ for r = 1 − p/100. At r = 0 grad-cam scores the clean image."""
    road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    confidence = pytest.importorskip("pytorch_grad_cam.metrics.perturbation_confidence")
    targets_module = pytest.importorskip("pytorch_grad_cam.utils.model_targets")
    model = LinearNet()
    generator = torch.Generator().manual_seed(6)
    images = torch.rand(4, 3, 10, 10, generator=generator)  # float32: grad-cam's imputer needs it
    # distinct values, exact in float64 (and so is 1 − value, which LeRF thresholds)
    maps = torch.stack([torch.randperm(100, generator=generator) for _ in range(4)]).double()
    maps = maps.view(4, 10, 10) / 100
    with torch.no_grad():
        labels = model(images).argmax(-1)
    labels[1] = (labels[1] + 1) % 4  # one image that starts as a miss

    ours = metric(model, noise=0.0, tol=TIGHT, chunk_size=7).curves(images, maps, labels)

    if metric.score == "hit":
        targets = [Hit(int(y)) for y in labels]
    else:
        targets = [targets_module.ClassifierOutputSoftmaxTarget(int(y)) for y in labels]
    removal = confidence.RemoveMostRelevantFirst if metric.descending else confidence.RemoveLeastRelevantFirst
    with torch.no_grad():
        theirs = [torch.stack([targets[j](out) for j, out in enumerate(model(images))]).numpy()]
    inputs, masks = [], []
    for r in PAPER_FRACTIONS[1:]:
        percentile = round(100 * (1 - r))
        imputer = road.NoisyLinearImputer(noise=0)
        scorer = confidence.PerturbationConfidenceMetric(removal(percentile, imputer))
        scores, perturbed = scorer(images, maps.numpy(), targets, model, return_visualization=True,
                                   return_diff=False)
        theirs.append(scores)
        inputs.append(perturbed)
        removed = torch.stack([mask_from_ranks(s, math.floor(r * 100), metric.descending) for s in maps])
        masks.append(removed)
        kept = ~removed[:, None].expand_as(images)
        assert torch.equal(perturbed[kept], images[kept])  # it removed (at most) our pixels
        assert not torch.equal(perturbed, images)
    theirs = torch.from_numpy(np.stack(theirs, axis=1)).double()

    # Inputs differ by at most `gradcam_bound`; a logit by
    # ‖W_c‖₁ times that, a softmax probability by half the largest logit change
    # (Σ_c |∂p_y/∂l_c| = 2 p_y (1 − p_y) ≤ 1/2), and grad-cam's np.float32 scores by eps32/2 more.
    input_error = max(gradcam_bound(removed[j]) for removed in masks for j in range(4))
    logit_error = float(model.linear.weight.detach().abs().sum(1).max()) * input_error
    if metric.score == "hit":
        with torch.no_grad():  # every perturbed input decides its top-1 by a margin well above the error
            logits = torch.cat([model(p) for p in inputs]).sort(-1, descending=True).values
        assert float((logits[:, 0] - logits[:, 1]).min()) > 2 * logit_error
        assert torch.equal(ours, theirs)
    else:
        torch.testing.assert_close(ours, theirs, atol=logit_error / 2 + EPS32 / 2, rtol=0)
    assert 0 < float(ours.mean()) < 1  # not degenerate


# --- the torchmetrics surface ----------------------------------------------------------------------

class TinyNet(nn.Module):
    """A small random conv net on [0, 1] images, in float64 (batch-size independent to ~eps64)."""

    def __init__(self, classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, padding=1).double()
        self.fc = nn.Linear(8 * 4, classes).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv((x.double() - 0.5) / 0.25))
        return 3 * self.fc(F.adaptive_avg_pool2d(h, 2).flatten(1))


@pytest.fixture
def data() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    model = TinyNet().eval()
    generator = torch.Generator().manual_seed(7)
    images = torch.rand(6, 3, 12, 12, generator=generator, dtype=torch.float64)
    maps = torch.rand(6, 6, 6, generator=generator)
    labels = torch.randint(0, 5, (6,), generator=generator)
    with torch.no_grad():
        labels[::2] = model(images[::2]).argmax(-1)
    return model, images, maps, labels


# Per-image AUCs: 100 · 0.1 · (a trapezoid of 10 float64 scores in [0, 1]); batch size changes a
# float64 forward by a few eps64 per score, so AUCs agree to 100·10·4·eps64 ≈ 1e-12.
AUC_ATOL = 100 * 10 * 4 * EPS64


@pytest.mark.parametrize("metric", ROAD, ids=lambda m: m.name)
def test_batched_equals_one_by_one_and_chunking_does_not_matter(metric: type, data) -> None:
    model, images, maps, labels = data
    whole = metric(model, chunk_size=1000)
    whole.update(images, maps, labels)
    for chunk_size in (1, 7):
        one_by_one = metric(model, chunk_size=chunk_size)
        for j in reversed(range(6)):  # another order too: the noise follows the image
            one_by_one.update(images[j:j + 1], maps[j:j + 1], labels[j:j + 1])
        torch.testing.assert_close(one_by_one.compute_per_image().flip(0), whole.compute_per_image(),
                                   atol=AUC_ATOL, rtol=0)
        torch.testing.assert_close(one_by_one.compute_curve(), whole.compute_curve(), atol=AUC_ATOL, rtol=0)
    assert 0 < float(whole.compute()) < 90


@pytest.mark.parametrize("metric", ROAD, ids=lambda m: m.name)
def test_two_metrics_states_sum_to_one_metric_over_all_images(metric: type, data) -> None:
    """What DDP's reduction does (sum, cat): per-rank states combine into the single-process one."""
    model, images, maps, labels = data
    first, second, whole = metric(model), metric(model), metric(model)
    first.update(images[:4], maps[:4], labels[:4])
    second.update(images[4:], maps[4:], labels[4:])
    whole.update(images, maps, labels)
    for state in ("curve_sum", "auc_sum", "count"):
        torch.testing.assert_close(getattr(first, state) + getattr(second, state), getattr(whole, state),
                                   atol=6 * AUC_ATOL, rtol=0)
    torch.testing.assert_close(torch.cat(first.image_aucs + second.image_aucs), whole.compute_per_image(),
                               atol=AUC_ATOL, rtol=0)


@pytest.mark.parametrize("metric", ROAD, ids=lambda m: m.name)
def test_inputs_are_not_modified(metric: type, data) -> None:
    model, images, maps, labels = data
    copies = images.clone(), maps.clone(), labels.clone()
    metric(model).update(images, maps, labels)
    for original, copy in zip((images, maps, labels), copies):
        assert torch.equal(original, copy)


def test_noise_is_seeded_by_the_image_and_the_seed(data) -> None:
    _, images, _, _ = data
    noise = image_noise(images, seed=0)
    assert noise.shape == images.shape and noise.dtype == torch.float32
    assert torch.equal(image_noise(images.flip(0), seed=0), noise.flip(0))
    assert not torch.equal(image_noise(images, seed=1), noise)
    other = images.clone()
    other[0, 0, 0, 0] += 0.25
    changed = image_noise(other, seed=0)
    assert not torch.equal(changed[0], noise[0]) and torch.equal(changed[1:], noise[1:])


def test_noise_is_added_to_imputed_pixels_only_and_not_clipped() -> None:
    """An all-ones image imputes to ones; with noise, about half the imputed pixels exceed 1 (the
    reference does not clip) and known pixels stay 1."""
    metric = ROADMoRFProbability(LinearNet((8, 8)), noise=0.05)
    images = torch.ones(2, 3, 8, 8)
    start, finish = metric.endpoints(images)
    removed = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    removed[:, :, 2:6, 1:7] = True
    inputs = metric.perturbed_inputs(start, finish, torch.tensor([0, 1]), removed)
    assert torch.equal(inputs[~removed.expand_as(inputs)], images[~removed.expand_as(images)])
    torch.testing.assert_close(inputs[removed.expand_as(inputs)],
                               (1 + finish)[removed.expand_as(finish)], atol=EPS32, rtol=0)
    assert (inputs > 1).any() and (inputs[removed.expand_as(inputs)] != 1).all()


# --- the oracle ------------------------------------------------------------------------------------

class RegionColourNet(nn.Module):
    """Reads only the 4×4 region REGION of a 16×16 image: class 0 if its mean red − green exceeds
    0.6, class 1 if green − red does, class 2 ("no object") otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = x[:, :, 6:10, 3:7].mean((2, 3))
        difference = region[:, 0] - region[:, 1]
        return 10 * torch.stack([difference, -difference, torch.full_like(difference, 0.6)], 1)


def oracle_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grey textured backgrounds (equal channels), a red or green 4×4 object on the region."""
    generator = torch.Generator().manual_seed(8)
    grey = 0.3 + 0.4 * torch.rand(6, 1, 16, 16, generator=generator)
    images = grey.expand(6, 3, 16, 16).clone()
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    images[:, :, 6:10, 3:7] = 0.05
    images[torch.arange(6), labels, 6:10, 3:7] = 0.95
    truth = torch.zeros(6, 16, 16)
    truth[:, 6:10, 3:7] = 1
    return images, labels, truth


PAIRS = [(ROADMoRFAccuracy, ROADLeRFAccuracy), (ROADMoRFProbability, ROADLeRFProbability)]


@pytest.mark.parametrize("pair", PAIRS, ids=["acc", "prob"])
def test_ground_truth_map_beats_random_maps(pair: tuple[type, type]) -> None:
    morf, lerf = pair
    images, labels, truth = oracle_data()
    model = RegionColourNet()
    random_maps = torch.rand(6, 16, 16, generator=torch.Generator().manual_seed(9))

    def value(metric: type, maps: torch.Tensor) -> float:
        m = metric(model)
        m.update(images, maps, labels)
        return float(m.compute())

    oracle_morf, random_morf = value(morf, truth), value(morf, random_maps)
    oracle_lerf, random_lerf = value(lerf, truth), value(lerf, random_maps)
    if morf.score == "hit":
        # MoRF: the object is gone from r = 0.1 (25 px ⊇ its 16): 100·0.1·(1 + 0)/2 = 5.
        # LeRF: at r = 0.9 only background is gone (230 of its 240 px): 90.
        assert (oracle_morf, oracle_lerf) == pytest.approx((5.0, 90.0), abs=AUC_ATOL, rel=0)
    assert random_morf > oracle_morf + 20 and random_lerf < oracle_lerf - 20


# --- registry and config --------------------------------------------------------------------------

def test_registry_and_metadata() -> None:
    model = LinearNet()
    expected = {"road_morf_acc": (False, "hit", True), "road_lerf_acc": (True, "hit", False),
                "road_morf_prob": (False, "prob", True), "road_lerf_prob": (True, "prob", False)}
    for name, (higher, score, descending) in expected.items():
        cls = METRICS[name]
        metric = create_metric(name, model, seed=3)
        assert isinstance(metric, ROADCurve) and metric.name == name and metric.seed == 3
        assert (cls.higher_is_better, cls.score, cls.descending) == (higher, score, descending)
        assert cls.description and metric.fractions == PAPER_FRACTIONS and metric.auc_scale == 100
    with pytest.raises(ValueError, match="noise"):
        ROADMoRFAccuracy(model, noise=-1)

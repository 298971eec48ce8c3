"""ROAD: RemOve And Debias (Rong et al., ICML 2022, "A Consistent and Efficient Evaluation
Strategy for Attribution Methods"): perturbation curves whose removed pixels are *imputed*
from their surroundings instead of blacked out, so that the removed region's outline does not
leak the class (PROTOCOLS.md, "Validity of a perturbation benchmark").

- `road_morf_acc`, `road_lerf_acc`: top-1 hit (argmax == ground-truth label), most / least
  relevant pixels removed first (the orders of POS / NEG); AUC ×100.
- `road_morf_prob`, `road_lerf_prob`: softmax probability of the ground-truth class, same orders.

Everything but the removal is the paper suite's (`PaperCurve`): fractions r = 0.0, …, 0.9,
k = ⌊r·H·W⌋ pixels removed at r (exact arithmetic), ties in stable order (lower flat index
first), AUC = 100 · trapezoid(curve, r) in [0, 90]; MoRF: lower is better, LeRF: higher.

**Noisy linear imputation**, as the authors' `NoisyLinearImputer` (repo tleemann/road_evaluation,
`road/imputations.py`; also pytorch-grad-cam's `metrics/road.py`), in [0, 1] pixel space (the
authors impute before the normalising transform), each channel separately: every removed pixel
equals the weighted mean of its in-image 8 neighbours, known or removed, with weights 1/6 for
the 4 direct and 1/12 for the 4 diagonal ones, renormalised by the weights inside the image at
borders; known pixels are fixed. Then Gaussian noise of std `noise` (0.01, absolute, as the
authors) is added to the removed pixels only, and nothing is clipped (as the authors): the
noise-free values are convex combinations of known pixels, so they stay in [0, 1], the noisy
ones may leave it by a few `noise`. With no pixel left (r = 1) the image is 0 plus noise.

Differences from the reference, on purpose: LeRF at r removes the ⌊r·H·W⌋ *least* relevant
pixels (the reference's `th_p` keeps a fraction instead); ties are broken by flat index rather
than by adding 1e-4 random noise to the map; the probability is that of the ground-truth label
(the reference's `road_eval` scores the class passed as `prediction`).

**Solver.** Removed pixels i solve (D − W) x = W_known v: with d_i the sum of in-image neighbour
weights, d_i x_i − Σ_{removed j} w_ij x_j = Σ_{known j} w_ij v_j. The matrix is symmetric (the
stencil is) and an irreducibly diagonally dominant M-matrix, so positive definite whenever a
pixel is known. On the CPU each image's system (its channels share the matrix) is factorised
once by a banded Cholesky (scipy's LAPACK; the bandwidth is W + 1 in row-major order) and
refined while needed; on other devices, Jacobi-preconditioned conjugate gradients run batched
over all (image, channel) systems, with the stencil applied as shifted adds of the padded image
(no matrix is built: a dense one is 134 MB at 64×64 in float64, 20 GB at 224×224), each system
leaving the working set once converged. Both are per-system, so an image's imputation does not
depend on the rest of its batch. Measured at 64×64 on 2 CPU cores, 9 solves per image and
order: Cholesky 0.06 s (smooth maps) to 0.075 s (scattered ones), CG 0.07 to 0.22 s.
Both stop when the preconditioned residual z = D⁻¹r, i.e. the largest difference between a
removed pixel and the weighted mean of its neighbours, is at most `tol` / (H² + W²). Why that
threshold: the error is e = (I − P)⁻¹ z with P the walk to a weighted random neighbour killed
on known pixels, so |e|∞ ≤ T·|z|∞ with T the walk's largest mean exit time; T is about
0.78 (H² + W²) when only a corner of 10 % of the pixels is known (the worst case of r ≤ 0.9)
and 4.5 (H² + W²) at 64×64 with a single known pixel, so the imputed values are within a few
`tol` of the exact solution (1e-6 by default, far below the noise and 8-bit quantisation,
4e-3). The solve runs in float64 because the system's condition number grows like the diameter
of the holes squared (about 10⁵ at 224×224). CG takes about 2·(H + W) iterations for large
contiguous holes, far fewer for scattered ones; `max_iter` (default 20·(H + W); refinements
for Cholesky) is a safety net that raises.

**Noise seeding.** One noise field (C, H, W) per image, drawn on the CPU from a generator seeded
with `zlib.crc32(image bytes, seed)` (as `ltx.methods.random` seeds its maps): the same image
gets the same noise in any batch, order, chunking, DDP shard, device or resumed run. All steps
and both orders of an image share that field (common random numbers: differences between steps
and between maps are not noise).

**Cost.** Per image and order: S = 10 forwards (the 9 with r > 0 after an imputation), as POS;
the `_acc` and `_prob` metrics of one order share them when evaluated together (in a
`PerturbationSuite`, as POS and DEL), never with the black-pixel metrics.
Memory per chunk: about 8 float64 tensors of chunk_size × C × H × W (0.3 GB each at 224×224 and
chunk_size 256): lower `chunk_size` on small devices.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ltx.metrics.perturbation import PaperCurve

#: neighbour weights of the imputation: (direct, diagonal), as the reference's
DIRECT_WEIGHT, DIAGONAL_WEIGHT = 1 / 6, 1 / 12


def neighbour_sum(x: Tensor) -> Tensor:
    """Σ_j w_j x_j over the 8 neighbours of every pixel of x (..., H, W), zero outside the image:
    the separable stencil ([1, 2, 1] ⊗ [1, 2, 1] − 4δ) / 12, in 6 passes (8 shifted adds: 15)."""
    padded = F.pad(x, (1, 1, 1, 1))
    columns = padded[..., :-2, :] + padded[..., 2:, :]
    columns.add_(padded[..., 1:-1, :], alpha=2)
    sums = columns[..., :-2] + columns[..., 2:]
    sums.add_(columns[..., 1:-1], alpha=2)
    return sums.sub_(x, alpha=4).div_(12)


def stopping_threshold(height: int, width: int, tol: float) -> float:
    """The largest |D⁻¹r| at which a system stops: `tol` / (H² + W²) (see the module)."""
    return tol / (height ** 2 + width ** 2)


def linear_imputation(images: Tensor, removed: Tensor, *, tol: float = 1e-6,
                      max_iter: int | None = None) -> Tensor:
    """Noise-free linear imputation (see the module): images (N, C, H, W) with the pixels of
    `removed` ((N, H, W) or (N, 1, H, W) bool) replaced by the solution of the neighbour-mean
    system, solved in float64; returned in the images' dtype, known pixels bit for bit."""
    if removed.dim() == 3:
        removed = removed[:, None]
    if images.dim() != 4 or removed.shape != (images.shape[0], 1, *images.shape[-2:]):
        raise ValueError(f"images (N, C, H, W) and removed (N, [1,] H, W) expected, got "
                         f"{tuple(images.shape)} and {tuple(removed.shape)}")
    height, width = images.shape[-2:]
    max_iter = 20 * (height + width) if max_iter is None else max_iter
    threshold = stopping_threshold(height, width, tol)
    known = torch.where(removed, 0.0, images.to(torch.float64))
    solve = banded_cholesky if images.device.type == "cpu" else conjugate_gradients
    if not solve(known, removed, threshold, max_iter):
        raise RuntimeError(f"linear imputation: no convergence to {threshold:.2g} in {max_iter} "
                           f"iterations at {height}×{width}: raise max_iter or tol")
    return torch.where(removed, known.to(images.dtype), images)


def degrees(height: int, width: int, device: torch.device) -> Tensor:
    """d_i, the sum of the in-image neighbour weights of every pixel, (1, 1, H, W) float64."""
    return neighbour_sum(torch.ones((1, 1, height, width), dtype=torch.float64, device=device))


#: the 4 neighbours after a pixel in row-major order, (dy, dx, weight)
FORWARD = ((0, 1, DIRECT_WEIGHT), (1, -1, DIAGONAL_WEIGHT), (1, 0, DIRECT_WEIGHT), (1, 1, DIAGONAL_WEIGHT))


def band_matrix(removed: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """D − W_RR of one mask (H, W) in the row-major numbering of its removed pixels, as the upper
    band (b + 1, n) of LAPACK (`scipy.linalg.cholesky_banded`); b ≤ W + 1."""
    height, width = removed.shape
    number = np.cumsum(removed).reshape(height, width) - 1
    pairs = []  # (offset j − i > 0, j, weight) of the removed neighbour pairs i < j
    for dy, dx, weight in FORWARD:
        first = removed[:height - dy, max(0, -dx):width - max(0, dx)]
        second = removed[dy:, max(0, dx):width - max(0, -dx)]
        both = first & second
        j = number[dy:, max(0, dx):width - max(0, -dx)][both]
        pairs.append((j - number[:height - dy, max(0, -dx):width - max(0, dx)][both], j, weight))
    bandwidth = max((int(offset.max()) for offset, _, _ in pairs if offset.size), default=0)
    band = np.zeros((bandwidth + 1, int(removed.sum())))
    band[bandwidth] = degree[removed]
    for offset, j, weight in pairs:
        band[bandwidth - offset, j] = -weight
    return band


def banded_cholesky(known: Tensor, removed: Tensor, threshold: float, max_iter: int) -> bool:
    """The CPU solver (see the module): `known` (N, C, H, W) float64, zero on the `removed`
    pixels (N, 1, H, W), gets the solution there, in place. Each image's system (its C channels
    share the matrix) is solved by a banded Cholesky factorisation and, while its |D⁻¹r| exceeds
    `threshold`, refined (at most `max_iter` solves in all); False if that was not enough."""
    degree = degrees(*known.shape[-2:], known.device)
    masks, values, degree_np = removed[:, 0].numpy(), known.numpy(), degree[0, 0].numpy()
    for refinement in range(max_iter + 1):
        residual = removed * (neighbour_sum(known) - degree * known)
        active = (residual / degree).abs().amax((1, 2, 3)) > threshold
        if not active.any():
            return True
        if refinement == max_iter:
            return False
        for n in active.nonzero()[:, 0].tolist():
            mask = masks[n]
            factor = scipy.linalg.cholesky_banded(band_matrix(mask, degree_np), check_finite=False)
            values[n][:, mask] += scipy.linalg.cho_solve_banded(
                (factor, False), residual[n].numpy()[:, mask].T, check_finite=False).T
    raise AssertionError("unreachable")


def conjugate_gradients(known: Tensor, removed: Tensor, threshold: float, max_iter: int) -> bool:
    """The solver on other devices (see the module), as `banded_cholesky`: Jacobi-preconditioned
    CG, batched over all (image, channel) systems, each leaving the working set once converged."""
    (batch, channels), (height, width) = known.shape[:2], known.shape[-2:]
    degree = degrees(height, width, known.device)
    mask = removed.to(torch.float64).expand(batch, channels, height, width).reshape(-1, 1, height, width)
    flat = known.view(-1, 1, height, width)  # a view: the solutions are written into `known`
    dims = (-2, -1)
    index = torch.arange(flat.shape[0], device=known.device)
    solution = torch.zeros_like(flat)
    residual = mask * neighbour_sum(flat)  # the right-hand side, x0 = 0
    z = residual / degree
    direction = z
    rz = (residual * z).sum(dims, keepdim=True)
    for iteration in itertools.count():
        active = z.abs().amax((1, 2, 3)) > threshold
        if not active.all():
            flat[index[~active]] += solution[~active]
            index, mask, solution, residual, z, direction, rz = (
                t[active] for t in (index, mask, solution, residual, z, direction, rz))
            if index.numel() == 0:
                return True
        if iteration == max_iter:
            return False
        q = mask * (degree * direction - neighbour_sum(direction))  # (D − W_RR) d, d zero on known pixels
        alpha = rz / (direction * q).sum(dims, keepdim=True)
        solution = solution + alpha * direction
        residual = residual - alpha * q
        z = residual / degree
        rz_next = (residual * z).sum(dims, keepdim=True)
        direction = z + (rz_next / rz) * direction
        rz = rz_next
    raise AssertionError("unreachable")


def image_noise(images: Tensor, seed: int) -> Tensor:
    """Standard normal noise (B, C, H, W) float32 on the CPU, one field per image, seeded by
    `zlib.crc32` of the image's bytes (as given: dtype included) and `seed`."""
    fields = []
    for image in images.detach().cpu():
        key = zlib.crc32(image.contiguous().view(torch.uint8).numpy().tobytes(), seed)
        fields.append(torch.randn(image.shape, generator=torch.Generator().manual_seed(key)))
    return torch.stack(fields)


class ROADCurve(PaperCurve):
    """The paper suite's 10-step curves with noisy linear imputation instead of black pixels.

    `noise`: std of the Gaussian noise on imputed pixels, in [0, 1] pixel units (0 turns it
    off); `seed`: mixed into every image's noise seed; `tol`, `max_iter`: the solver's (see the
    module). The accuracy and probability metrics of one order share their runs in a
`PerturbationSuite` (as POS and DEL).

    LeRF's benchmark-validity check is shown, not required (ltx.metrics.validity): imputation is
    built to make random removal nearly harmless, so random maps' LeRF sits close to the clean
    accuracy (73-74 against 95 % on the default's black boxes: experiments/README.md) and a fixed
    margin over random would measure that ceiling, not whether removal leaks the evidence.
    """

    def __init__(self, model: nn.Module, *, fractions: Sequence[float] | None = None, chunk_size: int = 256,
                 noise: float = 0.01, seed: int = 0, tol: float = 1e-6, max_iter: int | None = None,
                 **kwargs: Any) -> None:
        if noise < 0 or tol <= 0:
            raise ValueError(f"noise must be >= 0 and tol > 0, got noise={noise}, tol={tol}")
        super().__init__(model, fractions=fractions, chunk_size=chunk_size, **kwargs)
        self.noise = float(noise)
        self.seed = seed
        self.tol = tol
        self.max_iter = max_iter

    def run_settings(self) -> tuple:
        return (self.noise, self.seed, self.tol, self.max_iter)

    def endpoints(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(the images, their scaled noise fields, or a broadcast 0 when `noise` is 0)."""
        if self.noise == 0:
            return images, images.new_zeros(1, 1, 1, 1)
        return images, (self.noise * image_noise(images, self.seed)).to(images.device, images.dtype)

    def perturbed_inputs(self, start: Tensor, finish: Tensor, image: Tensor, perturbed: Tensor) -> Tensor:
        imputed = linear_imputation(start[image], perturbed, tol=self.tol, max_iter=self.max_iter)
        if self.noise == 0:
            return imputed
        return torch.where(perturbed, imputed + finish[image], imputed)


class ROADMoRFAccuracy(ROADCurve):
    """ROAD MoRF accuracy: top-1 hit, most relevant pixels imputed first; lower is better."""

    name = "road_morf_acc"
    description = ("ROAD: top-1 hit rate, most salient pixels removed first by noisy linear imputation "
                   "(AUC ×100, lower is better)")
    higher_is_better = False
    descending = True
    score = "hit"


class ROADLeRFAccuracy(ROADCurve):
    """ROAD LeRF accuracy: top-1 hit, least relevant pixels imputed first; higher is better."""

    name = "road_lerf_acc"
    validity_required = False  # see ROADCurve
    description = ("ROAD: top-1 hit rate, least salient pixels removed first by noisy linear imputation "
                   "(AUC ×100, higher is better)")
    higher_is_better = True
    descending = False
    score = "hit"


class ROADMoRFProbability(ROADCurve):
    """ROAD MoRF probability: label probability, most relevant pixels imputed first; lower is better."""

    name = "road_morf_prob"
    description = ("ROAD: label probability, most salient pixels removed first by noisy linear imputation "
                   "(AUC ×100, lower is better)")
    higher_is_better = False
    descending = True
    score = "prob"


class ROADLeRFProbability(ROADCurve):
    """ROAD LeRF probability: label probability, least relevant pixels imputed first; higher is better."""

    name = "road_lerf_prob"
    validity_required = False  # see ROADCurve
    description = ("ROAD: label probability, least salient pixels removed first by noisy linear imputation "
                   "(AUC ×100, higher is better)")
    higher_is_better = True
    descending = False
    score = "prob"


ROAD_METRICS: dict[str, type[ROADCurve]] = {
    cls.name: cls for cls in (ROADMoRFAccuracy, ROADLeRFAccuracy, ROADMoRFProbability, ROADLeRFProbability)
}

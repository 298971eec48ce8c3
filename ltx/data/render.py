"""What the procedural data sets (shapes, textures) share: per-index draws, colours, distractors, pixel work.

Each sample is a pure function of (seed, index): its random parameters come from a per-index
Philox stream, and the pixels are rendered for a whole batch at once with tensor ops that are
exact per element (arithmetic, sqrt, floor, comparisons; no transcendental functions, reductions
or matmuls over pixels), so a sample is bit-identical whatever batch it is rendered in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

# Sizes are fractions of the image side unless named *_px.
STROKE_LENGTH = (0.15, 0.35)
STROKE_HALF_WIDTH = (0.008, 0.016)
MIN_STROKE_HALF_WIDTH_PX = 0.6
BLOB_RADIUS = (0.03, 0.06)
BLOB_STRETCH = 0.04  # blobs are wobbly capsules of at most this length...
BLOB_WOBBLE = (0.1, 0.25)  # ...whose radius varies by this factor per harmonic (never round): at most
# (1 + 2 * 0.25) * 0.06 + 0.04 / 2 = 0.11 of the side
MIN_CONTRAST = 0.45  # minimal luminance gap between an object and the background around it (<= 0.5)
LUMA = np.array([0.299, 0.587, 0.114])
DISTRACTOR_DRAWS = 15  # uniforms per distractor slot taken by draw_distractors

_CHUNK_PIXELS = 2**20  # pixels rendered at once: bounds the (chunk, H, W) float temporaries to 4 MB

Rendered = tuple[Tensor, Tensor, Tensor]  # images (N, 3, H, W), masks (N, H, W), labels (N,)


# ---------------------------------------------------------------------------------------------
# Per-sample parameters, drawn from a per-index random stream.


class Columns:
    """Hands out consecutive columns of uniform draws, so the layout is written once, in order."""

    def __init__(self, draws: np.ndarray) -> None:
        self.draws, self.next = draws, 0

    def take(self, n: int | None = None) -> np.ndarray:
        width = 1 if n is None else n
        cols = self.draws[..., self.next : self.next + width]
        self.next += width
        return cols[..., 0] if n is None else cols

    def uniform(self, bounds: tuple[float, float], n: int | None = None) -> np.ndarray:
        return bounds[0] + (bounds[1] - bounds[0]) * self.take(n)

    def integers(self, low: int, high: int) -> np.ndarray:
        """Uniform integers in low..high, both included."""
        return low + np.minimum((self.take() * (high - low + 1)).astype(np.int64), high - low)


def uniform_draws(
    indices: np.ndarray, seed: int, fixed_draws: int, slots: int, slot_draws: int
) -> tuple[np.ndarray, np.ndarray]:
    """Uniforms (N, fixed_draws) and (N, slots, slot_draws) from one stream per sample.

    A Philox stream keyed by (index, seed) makes a sample independent of its batch; the fixed
    block comes first, so the key object and background do not depend on the distractor count.
    """
    fixed = np.empty((len(indices), fixed_draws))
    per_slot = np.empty((len(indices), slots, slot_draws))
    for row, index in enumerate(indices):
        rng = np.random.Generator(np.random.Philox(key=np.array([index, seed], dtype=np.uint64)))
        fixed[row] = rng.random(fixed_draws)
        per_slot[row] = rng.random((slots, slot_draws))
    return fixed, per_slot


def background_luminance(grid: np.ndarray, centre: np.ndarray, extent: np.ndarray, size: int) -> np.ndarray:
    """Luminance of the smooth background around objects, from the grid (no pixel reduction).

    grid (N, 3, G, G); centre (N, ..., 2) and extent (N, ...) in pixels -> (N, ...).
    """
    n, g = grid.shape[0], grid.shape[-1]
    cells = (np.arange(g) + 0.5) * size / g
    lum = np.clip((grid * LUMA[:, None, None]).sum(1), 0, 1).reshape(n, *[1] * (centre.ndim - 2), g, g)
    dy2 = (centre[..., 1, None, None] - cells[:, None]) ** 2
    dx2 = (centre[..., 0, None, None] - cells[None, :]) ** 2
    sigma = np.maximum(extent, size / g)[..., None, None]
    weight = np.exp(-(dx2 + dy2) / (2 * sigma**2))
    return (weight * lum).sum((-1, -2)) / weight.sum((-1, -2))


def luminance(colour: np.ndarray) -> np.ndarray:
    return (colour * LUMA).sum(-1)


def contrasting(colour: np.ndarray, background: np.ndarray, min_contrast: float = MIN_CONTRAST) -> np.ndarray:
    """Move a colour's luminance at least `min_contrast` (<= 0.5) away from `background`'s, keeping its hue.

    The colour goes the way it already leans (lighter or darker than the background) when that
    leaves room, else the other way; it is scaled towards white or black, which stays in [0, 1].
    """
    lum = luminance(colour)
    up = np.where(lum >= background, background + min_contrast <= 1, background - min_contrast < 0)
    target = np.where(
        up, np.maximum(lum, background + min_contrast), np.minimum(lum, background - min_contrast)
    )
    lighter = 1 - (1 - colour) * ((1 - target) / np.maximum(1 - lum, 1e-9))[..., None]
    darker = colour * (target / np.maximum(lum, 1e-9))[..., None]
    return np.where(up[..., None], lighter, darker)


@dataclass
class Distractors:
    """Strokes and blobs (wobbly capsules) in K slots per sample, in pixels."""

    active: np.ndarray  # (N, K) which slots are drawn
    seg_start: np.ndarray  # (N, K, 2)
    seg_delta: np.ndarray  # (N, K, 2) end - start
    seg_inv_len2: np.ndarray  # (N, K)
    radius: np.ndarray  # (N, K) half-width of strokes, mean radius of blobs
    wobble: np.ndarray  # (N, K, 4) radius harmonics: cos 2φ, sin 2φ, cos 3φ, sin 3φ
    colour: np.ndarray  # (N, K, 3)


def draw_distractors(slot: Columns, count: np.ndarray, grid: np.ndarray, size: int) -> Distractors:
    """Distractors from DISTRACTOR_DRAWS columns of `slot` (N, K, ...): `count` (N,) of them active,
    each coloured to stand out from the background `grid` around it."""
    slots = slot.draws.shape[1]
    is_blob = slot.take() < 0.5
    mid = size * slot.take(2)
    seg_angle = 2 * np.pi * slot.take()
    length = size * np.where(is_blob, BLOB_STRETCH * slot.take(), slot.uniform(STROKE_LENGTH))
    radius = np.where(
        is_blob,
        size * slot.uniform(BLOB_RADIUS),
        np.maximum(size * slot.uniform(STROKE_HALF_WIDTH), MIN_STROKE_HALF_WIDTH_PX),
    )
    # a blob's radius is radius * (1 + sum over k = 2, 3 of a_k cos(k phi - psi_k)): store the
    # coefficients of cos 2phi, sin 2phi, cos 3phi, sin 3phi (all zero for strokes)
    amplitude = slot.uniform(BLOB_WOBBLE, 2) * (radius * is_blob)[..., None]
    wobble = harmonic_wobble(amplitude, 2 * np.pi * slot.take(2))
    delta = length[..., None] * np.stack([np.cos(seg_angle), np.sin(seg_angle)], -1)
    colour = slot.take(3)
    extent = length / 2 + radius
    return Distractors(
        active=np.arange(slots) < count[:, None],
        seg_start=mid - delta / 2,
        seg_delta=delta,
        seg_inv_len2=1.0 / np.maximum(length**2, 1e-6),
        radius=radius,
        wobble=wobble,
        colour=contrasting(colour, background_luminance(grid, mid, extent, size)),
    )


def harmonic_wobble(amplitude: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Radius harmonics (..., 4) as distractor_distance reads them, from amplitudes and phases (..., 2)."""
    harmonics = np.stack([amplitude * np.cos(phase), amplitude * np.sin(phase)], -1)
    return harmonics.reshape(*amplitude.shape[:-1], 4)


# ---------------------------------------------------------------------------------------------
# Pixel work, batched.


@lru_cache(maxsize=16)
def bicubic_weights(size: int, grid: int) -> Tensor:
    """(size, grid) weights of PyTorch's bicubic upsampling, to apply it with exact elementwise ops."""
    eye = torch.eye(grid, dtype=torch.float64).view(grid, 1, grid, 1)
    weights = F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=False)
    return weights[:, 0, :, 0].T.float().contiguous()


def per_sample(array: np.ndarray, pixel_dims: int = 2) -> Tensor:
    """A per-sample numpy parameter as float32, with singleton pixel dims to broadcast."""
    values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return values.view(*array.shape, *[1] * pixel_dims)


def upsample(grid: np.ndarray, size: int) -> Tensor:
    """(N, C, G, G) -> (N, C, size, size): bicubic upsampling as explicit sums over the grid, so
    each pixel's arithmetic is batch-independent."""
    weights = bicubic_weights(size, grid.shape[-1])  # (S, G)
    cells = per_sample(grid, 0)
    g = cells.shape[-1]
    # (N, C, S) each
    rows = [sum(cells[:, :, k, j, None] * weights[:, j] for j in range(g)) for k in range(g)]
    return sum(rows[k][:, :, None, :] * weights[:, k, None] for k in range(g))


def pixel_grid(size: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates x (1, 1, S) and y (1, S, 1)."""
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    return coords.view(1, 1, size), coords.view(1, size, 1)


def length(x: Tensor, y: Tensor) -> Tensor:
    return torch.sqrt(x * x + y * y)


def coverage(distance_px: Tensor) -> Tensor:
    """Anti-aliasing from the signed distance: the fraction of a pixel a straight edge would cover."""
    return (0.5 - distance_px).clamp(0, 1)


def paint(image: Tensor, alpha: Tensor, colour: Tensor, rows: np.ndarray | None = None) -> None:
    """Alpha-blend one object per sample (only into samples `rows` when given) into `image`.

    colour (N or len(rows), 3, 1, 1) for a plain fill, or (..., 3, H, W) for a textured one.
    """
    if rows is None:
        image.add_(alpha[:, None] * (colour - image))
    else:
        part = image[rows]
        image[rows] = part + alpha[:, None] * (colour - part)


def wobbly_distance(ox: Tensor, oy: Tensor, radius: Tensor, wobble: Sequence[Tensor]) -> Tensor:
    """Signed distance (px, approximate) from offsets (ox, oy) to a disc whose radius wobbles with
    direction φ: radius + wobble · (cos 2φ, sin 2φ, cos 3φ, sin 3φ)."""
    dist = length(ox, oy)
    ux, uy = ox / (dist + 1e-6), oy / (dist + 1e-6)  # direction to the pixel: cos φ, sin φ
    harmonics = (ux * ux - uy * uy, 2 * ux * uy, ux * (4 * ux * ux - 3), uy * (3 - 4 * uy * uy))
    return dist - (radius + sum(w * harmonic for w, harmonic in zip(wobble, harmonics, strict=True)))


def distractor_distance(d: Distractors, slot: int, rows: np.ndarray, x: Tensor, y: Tensor) -> Tensor:
    """Signed distance (px) to a capsule around a segment whose radius wobbles with direction."""
    sx, sy = (per_sample(d.seg_start[rows, slot, i]) for i in range(2))
    dx, dy = (per_sample(d.seg_delta[rows, slot, i]) for i in range(2))
    px, py = x - sx, y - sy
    h = ((px * dx + py * dy) * per_sample(d.seg_inv_len2[rows, slot])).clamp(0, 1)
    wobble = [per_sample(d.wobble[rows, slot, i]) for i in range(4)]
    return wobbly_distance(px - dx * h, py - dy * h, per_sample(d.radius[rows, slot]), wobble)


def paint_distractors(
    image: Tensor,
    d: Distractors,
    x: Tensor,
    y: Tensor,
    fill: Callable[[int, np.ndarray], Tensor] | None = None,
) -> None:
    """Paint the active distractors in slot order; `fill(slot, rows)` gives their colours (default: plain)."""
    for slot in range(d.active.shape[1]):
        rows = np.flatnonzero(d.active[:, slot])
        if len(rows):
            alpha = coverage(distractor_distance(d, slot, rows, x, y))
            colour = per_sample(d.colour[rows, slot]) if fill is None else fill(slot, rows)
            paint(image, alpha, colour, rows)


# ---------------------------------------------------------------------------------------------
# The public surface: arguments, chunked rendering, a data set of rendered samples.


def check_args(
    image_size: int, num_classes: int, distractors: tuple[int, int], classes: Sequence[str]
) -> tuple[int, int]:
    if not 1 <= num_classes <= len(classes):
        raise ValueError(f"num_classes must be in 1..{len(classes)}, got {num_classes}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 px, got {image_size}")
    low, high = (int(d) for d in distractors)
    if not 0 <= low <= high:
        raise ValueError(f"distractors must be a (min, max) count with 0 <= min <= max, got {distractors}")
    return low, high


def render_in_chunks(
    indices: Sequence[int] | Tensor,
    *,
    seed: int,
    image_size: int,
    num_classes: int,
    distractors: tuple[int, int],
    classes: Sequence[str],
    draw: Callable[[np.ndarray, int, int, int, tuple[int, int]], Any],
    render: Callable[[Any, int], tuple[Tensor, Tensor]],
) -> Rendered:
    """Check the arguments, then render samples `indices` a bounded chunk at a time:
    `draw(indices, seed, image_size, num_classes, distractors)` gives their parameters (with their
    `labels`), `render(params, image_size)` their images and masks."""
    distractors = check_args(image_size, num_classes, distractors, classes)
    index_array = np.asarray(indices.cpu() if isinstance(indices, Tensor) else indices, dtype=np.int64)
    index_array = index_array.reshape(-1)
    if seed < 0 or (index_array < 0).any():
        raise ValueError("seed and indices must be non-negative")
    if len(index_array) == 0:
        return (
            torch.zeros(0, 3, image_size, image_size),
            torch.zeros(0, image_size, image_size, dtype=torch.bool),
            torch.zeros(0, dtype=torch.int64),
        )
    images, masks, labels = [], [], []
    chunk = max(1, _CHUNK_PIXELS // image_size**2)
    for start in range(0, len(index_array), chunk):
        params = draw(index_array[start : start + chunk], seed, image_size, num_classes, distractors)
        image, mask = render(params, image_size)
        images.append(image)
        masks.append(mask)
        labels.append(torch.from_numpy(params.labels))
    return torch.cat(images), torch.cat(masks), torch.cat(labels)


class GeneratedDataset(Dataset):
    """`size` samples of a generator, global indices offset..offset+size-1, rendered once.

    Subclasses name the generator's `classes` and its `render(indices, *, seed, image_size,
    num_classes, distractors)`. Images are kept as uint8 (a 10k-image 64 px set is 120 MB), so
    `__getitem__` is a cheap lookup.
    """

    classes: ClassVar[tuple[str, ...]]
    render: ClassVar[Callable[..., Rendered]]

    def __init__(
        self,
        size: int,
        *,
        seed: int,
        offset: int = 0,
        image_size: int = 64,
        num_classes: int = 8,
        distractors: tuple[int, int] = (1, 3),
    ) -> None:
        self.seed, self.offset = int(seed), int(offset)
        self.image_size, self.num_classes = int(image_size), int(num_classes)
        self.class_names: tuple[str, ...] = self.classes[: self.num_classes]
        self.indices = torch.arange(self.offset, self.offset + int(size), dtype=torch.int64)
        self.images = torch.empty(int(size), 3, self.image_size, self.image_size, dtype=torch.uint8)
        self.masks = torch.empty(int(size), self.image_size, self.image_size, dtype=torch.bool)
        self.labels = torch.empty(int(size), dtype=torch.int64)
        chunk = max(1, 2**22 // self.image_size**2)  # bounds the float32 images awaiting uint8 storage
        for start in range(0, int(size), chunk):
            stop = min(start + chunk, int(size))
            image, mask, label = type(self).render(
                self.indices[start:stop],
                seed=self.seed,
                image_size=self.image_size,
                num_classes=self.num_classes,
                distractors=distractors,
            )
            self.images[start:stop] = (image * 255).round_().to(torch.uint8)
            self.masks[start:stop] = mask
            self.labels[start:stop] = label

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {
            "image": self.images[i].float() / 255,
            "label": self.labels[i],
            "mask": self.masks[i],
            "index": self.indices[i],
        }

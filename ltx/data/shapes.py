"""Procedural "shapes" images whose class is the shape of one key object, with its exact mask.

The offline default data set: it needs no download, and because the ground-truth mask of the
class evidence is known, explanations can be scored against it. Everything that is not the key
object's shape (position, scale, rotation, colours, textured background, distractor strokes and
blobs) is drawn independently of the class, so a classifier has to look at the key object.

Each sample is a pure function of (seed, index): its random parameters come from a per-index
Philox stream, and the pixels are rendered for a whole batch at once with tensor ops that are
exact per element (arithmetic, sqrt, comparisons; no transcendental functions, reductions or
matmuls over pixels), so a sample is bit-identical whatever batch it is rendered in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "star",
    "ring",
    "crescent",
    "heart",
)

# Sizes are fractions of the image side unless named *_px.
KEY_RADIUS = (0.2, 0.3)  # key object's circumradius; at 0.14-0.24 small CNNs learnt the classes far slower
STROKE_LENGTH = (0.15, 0.35)
STROKE_HALF_WIDTH = (0.008, 0.016)
MIN_STROKE_HALF_WIDTH_PX = 0.6
BLOB_RADIUS = (0.03, 0.06)
BLOB_STRETCH = 0.04  # blobs are wobbly capsules of at most this length...
BLOB_WOBBLE = (0.1, 0.25)  # ...whose radius varies by this factor per harmonic (never round): at most
# (1 + 2 * 0.25) * 0.06 + 0.04 / 2 = 0.11 of the side, well under KEY_RADIUS[0]
STRIPE_PERIOD = (0.06, 0.18)
STRIPE_AMPLITUDE = 0.03
BACKGROUND_GRID = 4  # the low-frequency colour noise is a bicubic upsampling of a GRID x GRID grid
BACKGROUND_NOISE = 0.12
MIN_CONTRAST = 0.45  # minimal luminance gap between an object and the background around it (<= 0.5)
LUMA = np.array([0.299, 0.587, 0.114])

_CHUNK_PIXELS = 2**20  # pixels rendered at once: bounds the (chunk, H, W) float temporaries to 4 MB


# ---------------------------------------------------------------------------------------------
# Key shapes as signed distance functions in local units (circumscribed radius about 1, negative
# inside), mostly after Inigo Quilez's 2D SDFs. Distances are used for the anti-aliased edge.


def _length(x: Tensor, y: Tensor) -> Tensor:
    return torch.sqrt(x * x + y * y)


def _box(u: Tensor, v: Tensor, half_x: float, half_y: float) -> Tensor:
    qx, qy = u.abs() - half_x, v.abs() - half_y
    return _length(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)


def _circle(u: Tensor, v: Tensor) -> Tensor:
    return _length(u, v) - 1.0


def _square(u: Tensor, v: Tensor) -> Tensor:
    return _box(u, v, 0.72, 0.72)


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    """Equilateral triangle with circumradius 1, centred on its centroid."""
    k = math.sqrt(3.0)
    half_side = k / 2
    x, y = u.abs() - half_side, v + half_side / k
    fold = x + k * y > 0
    x, y = torch.where(fold, (x - k * y) / 2, x), torch.where(fold, (-k * x - y) / 2, y)
    x = x - x.clamp(-2 * half_side, 0)
    return -_length(x, y) * torch.sign(y)


def _cross(u: Tensor, v: Tensor) -> Tensor:
    return torch.minimum(_box(u, v, 0.95, 0.3), _box(u, v, 0.3, 0.95))


def _star(u: Tensor, v: Tensor) -> Tensor:
    """Five-pointed star, tips at radius 1; fat enough to stay a star at 32 px."""
    k1x, k1y = 0.809016994375, -0.587785252292  # (cos 36°, -sin 36°): the folding mirrors
    inner = 0.5
    x, y = u.abs(), v
    for kx in (k1x, -k1x):
        t = 2 * (kx * x + k1y * y).clamp(min=0)
        x, y = x - t * kx, y - t * k1y
    x, y = x.abs(), y - 1.0
    bax, bay = -inner * k1y, inner * k1x - 1.0
    h = ((x * bax + y * bay) / (bax * bax + bay * bay)).clamp(0, 1)
    return _length(x - bax * h, y - bay * h) * torch.sign(y * bax - x * bay)


def _ring(u: Tensor, v: Tensor) -> Tensor:
    return (_length(u, v) - 0.75).abs() - 0.25


def _crescent(u: Tensor, v: Tensor) -> Tensor:
    return torch.maximum(_length(u, v) - 1.0, 0.8 - _length(u - 0.55, v))


def _heart(u: Tensor, v: Tensor) -> Tensor:
    scale = 0.6  # iq's heart spans x in ±0.6, y in [0, 1.1]: map it onto about the unit disc
    x, y = (u * scale).abs(), v * scale + 0.55
    lobe = _length(x - 0.25, y - 0.75) - math.sqrt(2.0) / 4
    t = 0.5 * (x + y).clamp(min=0)
    point = torch.sqrt(torch.minimum(x * x + (y - 1) * (y - 1), (x - t) * (x - t) + (y - t) * (y - t)))
    return torch.where(x + y > 1, lobe, point * torch.sign(x - y)) / scale


_SHAPE_SDFS: tuple[Callable[[Tensor, Tensor], Tensor], ...] = (
    _circle,
    _square,
    _triangle,
    _cross,
    _star,
    _ring,
    _crescent,
    _heart,
)
assert len(_SHAPE_SDFS) == len(SHAPE_CLASSES)


# ---------------------------------------------------------------------------------------------
# Per-sample parameters, drawn from a per-index random stream.

_FIXED_DRAWS = 64  # uniforms per sample for the label, key object and background
_DISTRACTOR_DRAWS = 15  # uniforms per distractor slot


class _Columns:
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


@dataclass
class _Params:
    """Everything that varies between samples, in pixels; the pixel work needs nothing else."""

    labels: np.ndarray  # (N,)
    key_centre: np.ndarray  # (N, 2) x, y
    key_radius: np.ndarray  # (N,)
    key_axes: np.ndarray  # (N, 2) cos/r, sin/r: world -> local units
    key_colour: np.ndarray  # (N, 3)
    grid: np.ndarray  # (N, 3, G, G) background colour grid
    stripes: np.ndarray  # (N, 4) wave vector x, y (cycles/px), phase, amplitude
    active: np.ndarray  # (N, K) which distractor slots are drawn
    seg_start: np.ndarray  # (N, K, 2)
    seg_delta: np.ndarray  # (N, K, 2) end - start
    seg_inv_len2: np.ndarray  # (N, K)
    radius: np.ndarray  # (N, K) half-width of strokes, mean radius of blobs
    wobble: np.ndarray  # (N, K, 4) radius harmonics: cos 2φ, sin 2φ, cos 3φ, sin 3φ
    colour: np.ndarray  # (N, K, 3)


def _uniform_draws(indices: np.ndarray, seed: int, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniforms (N, _FIXED_DRAWS) and (N, slots, _DISTRACTOR_DRAWS) from one stream per sample.

    A Philox stream keyed by (index, seed) makes a sample independent of its batch; the fixed
    block comes first, so the key object and background do not depend on the distractor count.
    """
    fixed = np.empty((len(indices), _FIXED_DRAWS))
    per_slot = np.empty((len(indices), slots, _DISTRACTOR_DRAWS))
    for row, index in enumerate(indices):
        rng = np.random.Generator(np.random.Philox(key=np.array([index, seed], dtype=np.uint64)))
        fixed[row] = rng.random(_FIXED_DRAWS)
        per_slot[row] = rng.random((slots, _DISTRACTOR_DRAWS))
    return fixed, per_slot


def _background_luminance(grid: np.ndarray, centre: np.ndarray, extent: np.ndarray, size: int) -> np.ndarray:
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


def _contrasting(colour: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Move a colour's luminance at least MIN_CONTRAST away from the background's, keeping its hue.

    The colour goes the way it already leans (lighter or darker than the background) when that
    leaves room, else the other way; it is scaled towards white or black, which stays in [0, 1].
    """
    lum = (colour * LUMA).sum(-1)
    up = np.where(lum >= background, background + MIN_CONTRAST <= 1, background - MIN_CONTRAST < 0)
    target = np.where(
        up, np.maximum(lum, background + MIN_CONTRAST), np.minimum(lum, background - MIN_CONTRAST)
    )
    lighter = 1 - (1 - colour) * ((1 - target) / np.maximum(1 - lum, 1e-9))[..., None]
    darker = colour * (target / np.maximum(lum, 1e-9))[..., None]
    return np.where(up[..., None], lighter, darker)


def _draw_params(
    indices: np.ndarray, seed: int, size: int, num_classes: int, distractors: tuple[int, int]
) -> _Params:
    n, slots = len(indices), distractors[1]
    fixed, per_slot = _uniform_draws(indices, seed, slots)
    cols = _Columns(fixed)
    labels = cols.integers(0, num_classes - 1)

    centre_unit = cols.take(2)
    radius = size * cols.uniform(KEY_RADIUS)
    margin = 1.05 * radius + 1.0  # every shape fits in 1.05 radii: it stays inside the image
    centre = margin[:, None] + centre_unit * (size - 2 * margin[:, None])
    angle = 2 * np.pi * cols.take()
    axes = np.stack([np.cos(angle), np.sin(angle)], 1) / radius[:, None]
    key_colour = cols.take(3)

    g = BACKGROUND_GRID
    base = cols.take(3)
    noise = cols.take(3 * g * g).reshape(n, 3, g, g)
    grid = base[:, :, None, None] + BACKGROUND_NOISE * (2 * noise - 1)
    period = size * cols.uniform(STRIPE_PERIOD)
    direction = np.pi * cols.take()
    phase, amplitude = cols.take(), STRIPE_AMPLITUDE * cols.take()
    stripes = np.stack([np.cos(direction) / period, np.sin(direction) / period, phase, amplitude], 1)
    count = cols.integers(*distractors)
    assert cols.next == _FIXED_DRAWS

    slot = _Columns(per_slot)
    is_blob = slot.take() < 0.5
    mid = size * slot.take(2)
    seg_angle = 2 * np.pi * slot.take()
    length = size * np.where(is_blob, BLOB_STRETCH * slot.take(), slot.uniform(STROKE_LENGTH))
    radius_d = np.where(
        is_blob,
        size * slot.uniform(BLOB_RADIUS),
        np.maximum(size * slot.uniform(STROKE_HALF_WIDTH), MIN_STROKE_HALF_WIDTH_PX),
    )
    # a blob's radius is radius * (1 + sum over k = 2, 3 of a_k cos(k phi - psi_k)): store the
    # coefficients of cos 2phi, sin 2phi, cos 3phi, sin 3phi (all zero for strokes)
    amplitude = slot.uniform(BLOB_WOBBLE, 2) * (radius_d * is_blob)[..., None]
    phase = 2 * np.pi * slot.take(2)
    wobble = np.stack([amplitude * np.cos(phase), amplitude * np.sin(phase)], -1).reshape(n, slots, 4)
    delta = length[..., None] * np.stack([np.cos(seg_angle), np.sin(seg_angle)], -1)
    colour = slot.take(3)
    assert slot.next == _DISTRACTOR_DRAWS
    extent = length / 2 + radius_d
    return _Params(
        labels=labels,
        key_centre=centre,
        key_radius=radius,
        key_axes=axes,
        key_colour=_contrasting(key_colour, _background_luminance(grid, centre, radius, size)),
        grid=grid,
        stripes=stripes,
        active=np.arange(slots) < count[:, None],
        seg_start=mid - delta / 2,
        seg_delta=delta,
        seg_inv_len2=1.0 / np.maximum(length**2, 1e-6),
        radius=radius_d,
        wobble=wobble,
        colour=_contrasting(colour, _background_luminance(grid, mid, extent, size)),
    )


# ---------------------------------------------------------------------------------------------
# Pixel work, batched.


@lru_cache(maxsize=16)
def _bicubic_weights(size: int, grid: int) -> Tensor:
    """(size, grid) weights of PyTorch's bicubic upsampling, to apply it with exact elementwise ops."""
    eye = torch.eye(grid, dtype=torch.float64).view(grid, 1, grid, 1)
    weights = F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=False)
    return weights[:, 0, :, 0].T.float().contiguous()


def _t(array: np.ndarray, pixel_dims: int = 2) -> Tensor:
    """A per-sample numpy parameter as float32, with singleton pixel dims to broadcast."""
    values = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return values.view(*array.shape, *[1] * pixel_dims)


def _background(p: _Params, x: Tensor, y: Tensor) -> Tensor:
    """(N, 3, H, W): smooth colour noise from the upsampled grid, plus faint triangle-wave stripes."""
    weights = _bicubic_weights(x.shape[-1], p.grid.shape[-1])  # (S, G)
    grid = _t(p.grid, 0)
    g = grid.shape[-1]
    # separable upsampling written as explicit sums, so each pixel's arithmetic is batch-independent
    rows = [sum(grid[:, :, k, j, None] * weights[:, j] for j in range(g)) for k in range(g)]  # (N, 3, S) each
    smooth = sum(rows[k][:, :, None, :] * weights[:, k, None] for k in range(g))
    wx, wy, phase, amplitude = (_t(p.stripes[:, i]) for i in range(4))
    t = x * wx + y * wy + phase
    triangle_wave = ((t - t.floor()) - 0.5).abs() * 4 - 1
    return (smooth + (amplitude * triangle_wave)[:, None]).clamp(0, 1)


def _coverage(distance_px: Tensor) -> Tensor:
    """Anti-aliasing from the signed distance: the fraction of a pixel a straight edge would cover."""
    return (0.5 - distance_px).clamp(0, 1)


def _paint(image: Tensor, alpha: Tensor, colour: np.ndarray, rows: np.ndarray | None = None) -> None:
    """Alpha-blend one object per sample (only into samples `rows` when given) into `image`."""
    if rows is None:
        image.add_(alpha[:, None] * (_t(colour) - image))
    else:
        part = image[rows]
        image[rows] = part + alpha[:, None] * (_t(colour) - part)


def _distractor_distance(p: _Params, slot: int, rows: np.ndarray, x: Tensor, y: Tensor) -> Tensor:
    """Signed distance (px) to a capsule around a segment whose radius wobbles with direction."""
    sx, sy = (_t(p.seg_start[rows, slot, i]) for i in range(2))
    dx, dy = (_t(p.seg_delta[rows, slot, i]) for i in range(2))
    px, py = x - sx, y - sy
    h = ((px * dx + py * dy) * _t(p.seg_inv_len2[rows, slot])).clamp(0, 1)
    ox, oy = px - dx * h, py - dy * h
    dist = _length(ox, oy)
    ux, uy = ox / (dist + 1e-6), oy / (dist + 1e-6)  # direction to the pixel: cos φ, sin φ
    harmonics = (ux * ux - uy * uy, 2 * ux * uy, ux * (4 * ux * ux - 3), uy * (3 - 4 * uy * uy))
    radius = _t(p.radius[rows, slot]) + sum(
        _t(p.wobble[rows, slot, i]) * harmonic for i, harmonic in enumerate(harmonics)
    )
    return dist - radius


def _key_distance(p: _Params, x: Tensor, y: Tensor) -> Tensor:
    """Signed distance (px) to each sample's key object, evaluating only its own class's SDF."""
    cx, cy = (_t(p.key_centre[:, i]) for i in range(2))
    cos, sin = (_t(p.key_axes[:, i]) for i in range(2))
    dx, dy = x - cx, y - cy
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    distance = torch.empty_like(u)
    for label in np.unique(p.labels):
        rows = torch.from_numpy(np.flatnonzero(p.labels == label))
        distance[rows] = _SHAPE_SDFS[label](u[rows], v[rows])
    return distance * _t(p.key_radius)


def _render(p: _Params, size: int) -> tuple[Tensor, Tensor]:
    coords = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    x, y = coords.view(1, 1, size), coords.view(1, size, 1)
    image = _background(p, x, y)
    for slot in range(p.active.shape[1]):
        rows = np.flatnonzero(p.active[:, slot])
        if len(rows):
            alpha = _coverage(_distractor_distance(p, slot, rows, x, y))
            _paint(image, alpha, p.colour[rows, slot], rows)
    alpha = _coverage(_key_distance(p, x, y))  # drawn last: nothing covers the key object
    _paint(image, alpha, p.key_colour)
    return image, alpha >= 0.5


def _check_args(image_size: int, num_classes: int, distractors: tuple[int, int]) -> tuple[int, int]:
    if not 1 <= num_classes <= len(SHAPE_CLASSES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPE_CLASSES)}, got {num_classes}")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 px, got {image_size}")
    low, high = (int(d) for d in distractors)
    if not 0 <= low <= high:
        raise ValueError(f"distractors must be a (min, max) count with 0 <= min <= max, got {distractors}")
    return low, high


def render_shapes(
    indices: Sequence[int] | Tensor,
    *,
    seed: int,
    image_size: int = 64,
    num_classes: int = 8,
    distractors: tuple[int, int] = (1, 3),
) -> tuple[Tensor, Tensor, Tensor]:
    """Render samples `indices` of the generator `seed`.

    Returns images (N, 3, H, W) float32 in [0, 1], key-object masks (N, H, W) bool (pixels whose
    anti-aliased coverage is at least 0.5) and labels (N,) int64 indexing SHAPE_CLASSES.
    """
    distractors = _check_args(image_size, num_classes, distractors)
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
        params = _draw_params(index_array[start : start + chunk], seed, image_size, num_classes, distractors)
        image, mask = _render(params, image_size)
        images.append(image)
        masks.append(mask)
        labels.append(torch.from_numpy(params.labels))
    return torch.cat(images), torch.cat(masks), torch.cat(labels)


class ShapesDataset(Dataset):
    """`size` samples of the shapes generator, global indices offset..offset+size-1, rendered once.

    Images are kept as uint8 (a 10k-image 64 px set is 120 MB), so `__getitem__` is a cheap lookup.
    """

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
        self.class_names: tuple[str, ...] = SHAPE_CLASSES[: self.num_classes]
        self.indices = torch.arange(self.offset, self.offset + int(size), dtype=torch.int64)
        self.images = torch.empty(int(size), 3, self.image_size, self.image_size, dtype=torch.uint8)
        self.masks = torch.empty(int(size), self.image_size, self.image_size, dtype=torch.bool)
        self.labels = torch.empty(int(size), dtype=torch.int64)
        chunk = max(1, 2**22 // self.image_size**2)  # bounds the float32 images awaiting uint8 storage
        for start in range(0, int(size), chunk):
            stop = min(start + chunk, int(size))
            image, mask, label = render_shapes(
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

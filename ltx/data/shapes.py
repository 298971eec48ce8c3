"""Procedural "shapes" images whose class is the shape of one key object, with its exact mask.

The offline default data set: it needs no download, and because the ground-truth mask of the
class evidence is known, explanations can be scored against it. Everything that is not the key
object's shape (position, scale, rotation, colours, textured background, distractor strokes and
blobs) is drawn independently of the class, so a classifier has to look at the key object.

Each sample is a pure function of (seed, index), bit-identical whatever batch it is rendered in
(see ltx.data.render, shared with the textures generator).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ltx.data.render import (
    DISTRACTOR_DRAWS,
    Columns,
    Distractors,
    GeneratedDataset,
    Rendered,
    background_luminance,
    contrasting,
    coverage,
    draw_distractors,
    length,
    paint,
    paint_distractors,
    per_sample,
    pixel_grid,
    render_in_chunks,
    uniform_draws,
    upsample,
)

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
# (distractor blobs span at most 0.11 of the side, well under KEY_RADIUS[0]: see ltx.data.render)
STRIPE_PERIOD = (0.06, 0.18)
STRIPE_AMPLITUDE = 0.03
BACKGROUND_GRID = 4  # the low-frequency colour noise is a bicubic upsampling of a GRID x GRID grid
BACKGROUND_NOISE = 0.12


# ---------------------------------------------------------------------------------------------
# Key shapes as signed distance functions in local units (circumscribed radius about 1, negative
# inside), mostly after Inigo Quilez's 2D SDFs. Distances are used for the anti-aliased edge.




def _box(u: Tensor, v: Tensor, half_x: float, half_y: float) -> Tensor:
    qx, qy = u.abs() - half_x, v.abs() - half_y
    return length(qx.clamp(min=0), qy.clamp(min=0)) + torch.maximum(qx, qy).clamp(max=0)


def _circle(u: Tensor, v: Tensor) -> Tensor:
    return length(u, v) - 1.0


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
    return -length(x, y) * torch.sign(y)


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
    return length(x - bax * h, y - bay * h) * torch.sign(y * bax - x * bay)


def _ring(u: Tensor, v: Tensor) -> Tensor:
    return (length(u, v) - 0.75).abs() - 0.25


def _crescent(u: Tensor, v: Tensor) -> Tensor:
    return torch.maximum(length(u, v) - 1.0, 0.8 - length(u - 0.55, v))


def _heart(u: Tensor, v: Tensor) -> Tensor:
    scale = 0.6  # iq's heart spans x in ±0.6, y in [0, 1.1]: map it onto about the unit disc
    x, y = (u * scale).abs(), v * scale + 0.55
    lobe = length(x - 0.25, y - 0.75) - math.sqrt(2.0) / 4
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
    distractors: Distractors


def _draw_params(
    indices: np.ndarray, seed: int, size: int, num_classes: int, distractors: tuple[int, int]
) -> _Params:
    n, slots = len(indices), distractors[1]
    fixed, per_slot = uniform_draws(indices, seed, _FIXED_DRAWS, slots, DISTRACTOR_DRAWS)
    cols = Columns(fixed)
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

    slot = Columns(per_slot)
    distractor_set = draw_distractors(slot, count, grid, size)
    assert slot.next == DISTRACTOR_DRAWS
    return _Params(
        labels=labels,
        key_centre=centre,
        key_radius=radius,
        key_axes=axes,
        key_colour=contrasting(key_colour, background_luminance(grid, centre, radius, size)),
        grid=grid,
        stripes=stripes,
        distractors=distractor_set,
    )


# ---------------------------------------------------------------------------------------------
# Pixel work, batched.


def _background(p: _Params, x: Tensor, y: Tensor) -> Tensor:
    """(N, 3, H, W): smooth colour noise from the upsampled grid, plus faint triangle-wave stripes."""
    smooth = upsample(p.grid, x.shape[-1])
    wx, wy, phase, amplitude = (per_sample(p.stripes[:, i]) for i in range(4))
    t = x * wx + y * wy + phase
    triangle_wave = ((t - t.floor()) - 0.5).abs() * 4 - 1
    return (smooth + (amplitude * triangle_wave)[:, None]).clamp(0, 1)


def _key_distance(p: _Params, x: Tensor, y: Tensor) -> Tensor:
    """Signed distance (px) to each sample's key object, evaluating only its own class's SDF."""
    cx, cy = (per_sample(p.key_centre[:, i]) for i in range(2))
    cos, sin = (per_sample(p.key_axes[:, i]) for i in range(2))
    dx, dy = x - cx, y - cy
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    distance = torch.empty_like(u)
    for label in np.unique(p.labels):
        rows = torch.from_numpy(np.flatnonzero(p.labels == label))
        distance[rows] = _SHAPE_SDFS[label](u[rows], v[rows])
    return distance * per_sample(p.key_radius)


def _render(p: _Params, size: int) -> tuple[Tensor, Tensor]:
    x, y = pixel_grid(size)
    image = _background(p, x, y)
    paint_distractors(image, p.distractors, x, y)
    alpha = coverage(_key_distance(p, x, y))  # drawn last: nothing covers the key object
    paint(image, alpha, per_sample(p.key_colour))
    return image, alpha >= 0.5


def render_shapes(
    indices: Sequence[int] | Tensor,
    *,
    seed: int,
    image_size: int = 64,
    num_classes: int = 8,
    distractors: tuple[int, int] = (1, 3),
) -> Rendered:
    """Render samples `indices` of the generator `seed`.

    Returns images (N, 3, H, W) float32 in [0, 1], key-object masks (N, H, W) bool (pixels whose
    anti-aliased coverage is at least 0.5) and labels (N,) int64 indexing SHAPE_CLASSES.
    """
    sizes = dict(image_size=image_size, num_classes=num_classes, distractors=distractors)
    return render_in_chunks(indices, seed=seed, **sizes, classes=SHAPE_CLASSES, draw=_draw_params, render=_render)


class ShapesDataset(GeneratedDataset):
    """`size` samples of the shapes generator, global indices offset..offset+size-1, rendered once.

    Images are kept as uint8 (a 10k-image 64 px set is 120 MB), so `__getitem__` is a cheap lookup.
    """

    classes = SHAPE_CLASSES
    render = staticmethod(render_shapes)

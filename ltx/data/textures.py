"""Procedural "textures" images whose class is the pattern inside one key object, with its exact mask.

The default generated benchmark for perturbation metrics. In the shapes set the class is the key
object's silhouette, which survives blackening the object, so a black box still answers with the
object removed. Here the silhouette (a star-convex blob: random size, position, low harmonics),
the pattern's two colours, period, phase and orientation, the value-noise background and the
distractors (plain or noise-filled strokes and blobs, never a class pattern) are all drawn
independently of the class: the only class evidence is the pattern inside the key object's mask,
and a part of the object usually suffices to tell the class, as object parts do on ImageNet.

Each sample is a pure function of (seed, index), bit-identical whatever batch it is rendered in
(see ltx.data.render, shared with the shapes generator).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# per-sample draws and colours
from ltx.data.render import DISTRACTOR_DRAWS, Columns, Distractors, harmonic_wobble, uniform_draws
from ltx.data.render import background_luminance, contrasting, draw_distractors, luminance
# pixel work
from ltx.data.render import coverage, length, paint, paint_distractors, per_sample, pixel_grid
from ltx.data.render import upsample, wobbly_distance
# the public surface
from ltx.data.render import GeneratedDataset, Rendered, render_in_chunks

TEXTURE_CLASSES: tuple[str, ...] = (
    "stripes",
    "checkerboard",
    "dots",
    "grid",
    "rings",
    "spokes",
    "zigzag",
    "waves",
)

# Sizes are fractions of the image side unless named *_px; pattern shapes are in periods.
KEY_RADIUS = (0.2, 0.3)  # the key blob's mean radius
KEY_WOBBLE = (0.0, 0.15)  # its radius varies by this factor per harmonic (2 and 3): at most 1.3 radii
PERIOD = (0.1, 0.16)  # pattern period: 6.4-10 px at 64 px; at 5 px, dots and checkerboards were confused
SPOKES = (5, 8)  # lines through the centre: twice as many wedges
MIN_CONTRAST_KEY = 0.3  # luminance gap of the pattern's first colour from the background around it
PATTERN_CONTRAST = 0.4  # luminance gap between the pattern's two colours
DOT_RADIUS = 0.22
GRID_HALF_WIDTH = 0.1
ZIGZAG_AMPLITUDE, ZIGZAG_WAVELENGTH = 0.8, 1.6  # sharp chevrons at 45°
WAVE_AMPLITUDE, WAVE_WAVELENGTH = 0.45, 3.0  # smooth, longer bends
BACKGROUND_OCTAVES = ((4, 0.12), (8, 0.07))  # value noise: (grid cells per side, amplitude) per octave
DISTRACTOR_NOISE_GRID = 16
DISTRACTOR_NOISE = 0.6  # amplitude of the noise inside textured distractors
TEXTURED_DISTRACTORS = 0.5  # the probability that a distractor is noise-filled, not plain

_SLOT_DRAWS = DISTRACTOR_DRAWS + 1  # the shared distractor layout, then "textured?"
_FIXED_DRAWS = (
    1 + 2 + 1 + 4 + 6 + 4 + 1  # label, centre, radius, wobble, colours, period/orientation/phase, spokes
    + 3 + sum(3 * g * g for g, _ in BACKGROUND_OCTAVES) + DISTRACTOR_NOISE_GRID**2 + 1
)


@dataclass
class _Params:
    """A chunk's sample parameters (in pixels): all that the pixel work reads."""

    labels: np.ndarray  # (N,) the class: which pattern fills the key object
    key_centre: np.ndarray  # (N, 2) x, y of the key blob's centre
    key_radius: np.ndarray  # (N,) its mean radius
    key_wobble: np.ndarray  # (N, 4) radius harmonics, as ltx.data.render.wobbly_distance reads them
    colours: np.ndarray  # (N, 2, 3) the pattern's two colours
    period: np.ndarray  # (N,) px
    axes: np.ndarray  # (N, 2) cos, sin of the pattern's orientation
    phase: np.ndarray  # (N, 2) in periods, along and across the orientation
    spokes: np.ndarray  # (N, max spokes, 3) cos, sin of each spoke line and 0 (or 1e4: unused)
    octaves: tuple[np.ndarray, ...]  # (N, 3, G, G) background value-noise grids
    distractor_noise: np.ndarray  # (N, 1, G, G) noise grid of textured distractors
    distractors: Distractors
    noise_amplitude: np.ndarray  # (N, K) 0 for plain distractors


def _draw_params(
    indices: np.ndarray, seed: int, size: int, num_classes: int, distractors: tuple[int, int]
) -> _Params:
    n = len(indices)
    fixed, per_slot = uniform_draws(indices, seed, _FIXED_DRAWS, distractors[1], _SLOT_DRAWS)
    cols = Columns(fixed)
    labels = cols.integers(0, num_classes - 1)  # the only draw the class depends on
    # the silhouette
    position = cols.take(2)
    radius = size * cols.uniform(KEY_RADIUS)
    amplitude = cols.uniform(KEY_WOBBLE, 2)
    wobble = harmonic_wobble(amplitude * radius[:, None], 2 * np.pi * cols.take(2))
    margin = radius * (1 + amplitude.sum(1)) + 1.0  # the blob stays inside the image
    centre = margin[:, None] + position * (size - 2 * margin[:, None])
    colours = cols.take(6).reshape(n, 2, 3)
    period = size * cols.uniform(PERIOD)
    angle = 2 * np.pi * cols.take()
    phase = cols.take(2)
    count = cols.integers(*SPOKES)
    spoke_angles = angle[:, None] + np.pi * np.arange(SPOKES[1]) / count[:, None]
    unused = np.where(np.arange(SPOKES[1]) < count[:, None], 0.0, 1e4)
    spokes = np.stack([np.cos(spoke_angles), np.sin(spoke_angles), unused], -1)

    base = cols.take(3)[:, :, None, None]
    octaves = tuple(amp * (2 * cols.take(3 * g * g).reshape(n, 3, g, g) - 1) for g, amp in BACKGROUND_OCTAVES)
    g = DISTRACTOR_NOISE_GRID
    distractor_noise = 2 * cols.take(g * g).reshape(n, 1, g, g) - 1
    distractor_count = cols.integers(*distractors)
    assert cols.next == _FIXED_DRAWS

    coarse = base + octaves[0]
    first = contrasting(colours[:, 0], background_luminance(coarse, centre, radius, size), MIN_CONTRAST_KEY)
    second = contrasting(colours[:, 1], luminance(first), PATTERN_CONTRAST)
    slot = Columns(per_slot)
    distractor_set = draw_distractors(slot, distractor_count, coarse, size)
    textured = slot.take() < TEXTURED_DISTRACTORS
    assert slot.next == _SLOT_DRAWS
    return _Params(
        labels=labels,
        key_centre=centre,
        key_radius=radius,
        key_wobble=wobble,
        colours=np.stack([first, second], 1),
        period=period,
        axes=np.stack([np.cos(angle), np.sin(angle)], 1),
        phase=phase,
        spokes=spokes,
        octaves=(coarse, *octaves[1:]),
        distractor_noise=distractor_noise,
        distractors=distractor_set,
        noise_amplitude=DISTRACTOR_NOISE * textured,
    )


# ---------------------------------------------------------------------------------------------
# Patterns: signed distances (px) to the pattern's second colour, in the key object's frame.


@dataclass
class _Frame:
    """Pixel coordinates of some samples in their key object's frame."""

    dx: Tensor  # px right of the object centre
    dy: Tensor  # px below it
    su: Tensor  # periods along the pattern's orientation, phase included
    sv: Tensor  # periods across it
    period: Tensor
    phase: Tensor  # periods, along the orientation (the rings' radial phase)
    spokes: Tensor  # (R, max spokes, 3, 1, 1)


def _centred(s: Tensor) -> Tensor:
    """Offset from the middle of the current period, in [-0.5, 0.5)."""
    return s - s.floor() - 0.5


def _bands(s: Tensor) -> Tensor:
    """Signed distance (periods) to bands half a period wide, one per period."""
    return _centred(s).abs() - 0.25


def _stripes(f: _Frame) -> Tensor:
    return _bands(f.su) * f.period


def _checkerboard(f: _Frame) -> Tensor:
    a, b = _bands(f.su), _bands(f.sv)
    return torch.sign(a * b) * torch.minimum(a.abs(), b.abs()) * f.period


def _dots(f: _Frame) -> Tensor:
    return (length(_centred(f.su), _centred(f.sv)) - DOT_RADIUS) * f.period


def _grid(f: _Frame) -> Tensor:
    offset = torch.maximum(_centred(f.su).abs(), _centred(f.sv).abs())
    return (0.5 - GRID_HALF_WIDTH - offset) * f.period


def _rings(f: _Frame) -> Tensor:
    return _bands(length(f.dx, f.dy) / f.period + f.phase) * f.period


def _spokes(f: _Frame) -> Tensor:
    """Alternate wedges between lines through the centre: crossing a line flips one sign."""
    sign, distance = torch.ones_like(f.dx), torch.full_like(f.dx, math.inf)
    for k in range(f.spokes.shape[1]):
        cos, sin, unused = f.spokes[:, k, 0], f.spokes[:, k, 1], f.spokes[:, k, 2]
        side = cos * f.dy - sin * f.dx + unused
        sign, distance = sign * torch.sign(side), torch.minimum(distance, side.abs())
    return sign * distance


def _displaced_bands(f: _Frame, shift: Tensor, amplitude: float, max_slope: float) -> Tensor:
    """Stripes shifted along su by amplitude * shift(sv) periods; distances corrected for the slope."""
    return _bands(f.su + amplitude * shift) * (f.period / math.sqrt(1 + max_slope**2))


def _zigzag(f: _Frame) -> Tensor:
    triangle = 2 * _centred(f.sv / ZIGZAG_WAVELENGTH).abs()  # in [0, 1], slope ±2 per wavelength
    return _displaced_bands(f, triangle, ZIGZAG_AMPLITUDE, 2 * ZIGZAG_AMPLITUDE / ZIGZAG_WAVELENGTH)


def _waves(f: _Frame) -> Tensor:
    w = 2 * _centred(f.sv / WAVE_WAVELENGTH)
    parabolic_sine = 4 * w * (1 - w.abs())  # in [-1, 1], smooth, slope 8 per wavelength at zero
    return _displaced_bands(f, parabolic_sine, WAVE_AMPLITUDE, 8 * WAVE_AMPLITUDE / WAVE_WAVELENGTH)


_PATTERNS: tuple[Callable[[_Frame], Tensor], ...] = (
    _stripes,
    _checkerboard,
    _dots,
    _grid,
    _rings,
    _spokes,
    _zigzag,
    _waves,
)
assert len(_PATTERNS) == len(TEXTURE_CLASSES)


# ---------------------------------------------------------------------------------------------
# Pixel work, batched.


def _frame(p: _Params, rows: np.ndarray, x: Tensor, y: Tensor) -> _Frame:
    cx, cy = (per_sample(p.key_centre[rows, i]) for i in range(2))
    cos, sin = (per_sample(p.axes[rows, i]) for i in range(2))
    period = per_sample(p.period[rows])
    dx, dy = x - cx, y - cy
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    phase = per_sample(p.phase[rows, 0])
    su, sv = u / period + phase, v / period + per_sample(p.phase[rows, 1])
    return _Frame(dx=dx, dy=dy, su=su, sv=sv, period=period, phase=phase, spokes=per_sample(p.spokes[rows]))


def _key_object(p: _Params, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Coverage (N, H, W) of each sample's key blob and its fill (N, 3, H, W), evaluating only
    its own class's pattern."""
    cx, cy = (per_sample(p.key_centre[:, i]) for i in range(2))
    wobble = [per_sample(p.key_wobble[:, i]) for i in range(4)]
    alpha = coverage(wobbly_distance(x - cx, y - cy, per_sample(p.key_radius), wobble))
    second = torch.empty_like(alpha)
    for label in np.unique(p.labels):
        rows = np.flatnonzero(p.labels == label)
        second[torch.from_numpy(rows)] = coverage(_PATTERNS[label](_frame(p, rows, x, y)))
    first, other = (per_sample(p.colours[:, i]) for i in range(2))
    return alpha, first + second[:, None] * (other - first)


def _render(p: _Params, size: int) -> tuple[Tensor, Tensor]:
    x, y = pixel_grid(size)
    image = sum(upsample(octave, size) for octave in p.octaves).clamp(0, 1)
    noise = upsample(p.distractor_noise, size)

    def fill(slot: int, rows: np.ndarray) -> Tensor:
        plain = per_sample(p.distractors.colour[rows, slot])
        return (plain + per_sample(p.noise_amplitude[rows, slot], 3) * noise[rows]).clamp(0, 1)

    paint_distractors(image, p.distractors, x, y, fill)
    alpha, colour = _key_object(p, x, y)  # drawn last: nothing covers the key object
    paint(image, alpha, colour)
    return image, alpha >= 0.5


def render_textures(
    indices: Sequence[int] | Tensor, *, seed: int, image_size: int = 64, num_classes: int = 8,
    distractors: tuple[int, int] = (1, 3),
) -> Rendered:
    """Render samples `indices` of the textures generator `seed`.

    Returns images (N, 3, H, W) float32 in [0, 1], key-object masks (N, H, W) bool (pixels whose
    anti-aliased coverage is at least 0.5) and labels (N,) int64 indexing TEXTURE_CLASSES.
    Changing only num_classes changes labels and the pattern inside the mask, nothing else.
    """
    sizes = dict(image_size=image_size, num_classes=num_classes, distractors=distractors)
    return render_in_chunks(indices, seed=seed, **sizes, classes=TEXTURE_CLASSES, draw=_draw_params, render=_render)


class TexturesDataset(GeneratedDataset):
    """`size` samples of the textures generator, global indices offset..offset+size-1, rendered once
    and stored as uint8."""

    classes = TEXTURE_CLASSES
    render = staticmethod(render_textures)

"""The figures: a run's grid of example maps and its mean perturbation curves per backbone (PNG,
linked from results.md and embedded in results.html by `ltx.report`), and `ltx explain`'s figure
per explained image."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Subset  # noqa: E402

from ltx.store import MapStore, atomic_write  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def map_grid(path: Path, store: MapStore, backbone: str, instances: Subset, num_examples: int,
             class_mode: str = "predicted") -> None:
    """Rows: example images; columns: image, ground-truth mask (if any), each method's map."""
    keys = [k for k in store.keys() if k.backbone == backbone and k.class_mode == class_mode]
    if not keys or num_examples <= 0:
        return
    examples = [instances[i] for i in range(min(num_examples, len(instances)))]
    saved = {k.method: store.load(k) for k in keys}
    has_mask = "mask" in examples[0]
    columns = ["image"] + (["ground truth"] if has_mask else []) + list(saved)
    fig, axes = plt.subplots(len(examples), len(columns), figsize=(1.6 * len(columns), 1.6 * len(examples)),
                             squeeze=False)
    for r, example in enumerate(examples):
        panels = [example["image"].permute(1, 2, 0).clamp(0, 1)] + ([example["mask"].float()] if has_mask else [])
        for data in saved.values():
            row = (data["index"] == int(example["index"])).nonzero()
            panels.append(data["maps"][int(row[0, 0])] if len(row) else torch.zeros(1, 1))
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(panel.numpy(), cmap=None if c == 0 else "inferno")
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
    fig.suptitle(f"{backbone} ({class_mode} class)", fontsize=9)
    _save(fig, path)


def curve_plot(path: Path, curves: dict[tuple[str, str, str, str], list[float]], backbone: str) -> None:
    """Mean perturbation curves: one panel per (class mode, metric), one line per method."""
    mine = {k: v for k, v in curves.items() if k[0] == backbone}
    if not mine:
        return
    modes = sorted({k[2] for k in mine}, reverse=True)
    metrics = list(dict.fromkeys(k[3] for k in mine))
    fig, axes = plt.subplots(len(modes), len(metrics), figsize=(3 * len(metrics), 2.6 * len(modes)),
                             squeeze=False, sharey="col")
    for (_, method, mode, metric), values in mine.items():
        ax = axes[modes.index(mode)][metrics.index(metric)]
        ax.plot(curve_fractions(len(values)), values, marker="." if len(values) <= 20 else None, label=method)
        ax.set_title(f"{metric} ({mode})", fontsize=9)
        ax.set_xlabel("fraction perturbed", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(backbone, fontsize=10)
    _save(fig, path)


def curve_fractions(steps: int) -> list[float]:
    """The perturbed fraction at each curve step (the paper's 10 steps: 0 %, 10 %, ..., 90 %)."""
    return (torch.linspace(0, 1, steps) * (0.9 if steps == 10 else 1.0)).tolist()


def explanation_figure(path: Path, image: np.ndarray, saliency: np.ndarray, title: str,
                       top: list[tuple[str, float]], explained: str, flag: str | None = None) -> None:
    """Image, map over the image, what the mask keeps (m·x), the top classes (the explained one in colour);
    `flag` (a degenerate mask and what to change) in red above them all."""
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), gridspec_kw={"width_ratios": [1, 1, 1, 1.1]})
    if flag:
        fig.suptitle(textwrap.fill(flag, 170), color="tab:red", fontsize=10)
    axes[0].imshow(image)
    axes[0].set_title(title, fontsize=9)
    axes[1].imshow(image)
    shown = axes[1].imshow(saliency, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.02)
    axes[1].set_title(f"LTX map: {explained}", fontsize=9)
    axes[2].imshow(image * saliency[..., None])
    axes[2].set_title(f"kept by the mask (area {saliency.mean():.0%})", fontsize=9)
    for ax in axes[:3]:
        ax.set_xticks([]), ax.set_yticks([])
    names, probs = zip(*top)
    colours = ["tab:red" if name == explained else "tab:gray" for name in names]
    bars = axes[3].barh(range(len(top)), probs, color=colours)
    axes[3].bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    axes[3].set_yticks(range(len(top)), [n[:28] for n in names], fontsize=8)
    axes[3].invert_yaxis()
    axes[3].set_xlim(0, 1)
    axes[3].set_title("top classes (probability)", fontsize=9)
    _save(fig, path)


def sanity_plot(path: Path, rows: list[dict], backbone: str, threshold: float) -> None:
    """The model-randomisation check of one backbone (`ltx.sanity`): Spearman correlation with the
    original maps against the randomised depth, one panel per check (cascading, independent), one
    line per method, the pass threshold dashed."""
    checks = [c for c in ("cascading", "independent") if any(r["check"] == c for r in rows)]
    if not checks:
        return
    fig, axes = plt.subplots(1, len(checks), figsize=(5.5 * len(checks), 3.8), squeeze=False, sharey=True)
    for ax, check in zip(axes[0], checks):
        mine = [r for r in rows if r["check"] == check]
        layers = {r["depth"]: r["layer"] for r in mine}
        for method in dict.fromkeys(r["method"] for r in mine):
            points = sorted((r["depth"], r["spearman"]) for r in mine if r["method"] == method)
            ax.plot(*zip(*points), marker=".", label=method)
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xticks(sorted(layers), [layers[d] for d in sorted(layers)], rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{check} randomisation (from the top)" if check == "cascading" else
                     "independent randomisation (one group)", fontsize=9)
        ax.set_ylabel("Spearman ρ with the original maps", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(backbone, fontsize=10)
    _save(fig, path)

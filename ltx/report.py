"""What a run shows a person: results.md (tables, printed at the end) and a PNG grid of maps."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Subset  # noqa: E402

from ltx.store import MapStore, atomic_write, write_json  # noqa: E402

log = logging.getLogger(__name__)


def _direction(metric: str) -> str:
    from ltx.metrics import METRICS

    cls = METRICS.get(metric)
    return "" if cls is None else (" ↑" if cls.higher_is_better else " ↓")


def results_table(rows: list[dict[str, Any]], backbone: str, class_mode: str) -> str:
    """A markdown table for one backbone and class mode: methods × metrics (↑ / ↓: better)."""
    cells: dict[str, dict[str, float]] = defaultdict(dict)
    metrics: list[str] = []
    for row in rows:
        if row["backbone"] == backbone and row["class_mode"] == class_mode:
            metrics += [row["metric"]] if row["metric"] not in metrics else []
            cells[row["method"]][row["metric"]] = row["value"]
    if not cells:
        return ""
    lines = ["| method | " + " | ".join(m + _direction(m) for m in metrics) + " |",
             "|---|" + "---:|" * len(metrics)]
    for method, values in cells.items():
        lines.append(f"| {method} | " + " | ".join(
            f"{values[m]:.4g}" if m in values else "–" for m in metrics) + " |")
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    parts = ["# Results", ""]
    modes = list(dict.fromkeys(row["class_mode"] for row in rows))
    for backbone, acc in info["blackbox_accuracy"].items():
        parts += [f"## {backbone}", "", f"Black-box test accuracy: {100 * acc:.2f} %", ""]
        for mode in modes:
            table = results_table(rows, backbone, mode)
            if table:
                parts += [f"### {mode} class", "", table, ""]
    settings = info.get("settings", {})
    if settings:
        parts += ["## How the maps were made", ""]
        parts += [f"- `{key}`: {setting}" for key, setting in settings.items() if setting]
        parts.append("")
    return "\n".join(parts)


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
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


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
        x = torch.linspace(0, 1, len(values)) * (0.9 if len(values) == 10 else 1.0)
        ax.plot(x.numpy(), values, marker="." if len(values) <= 20 else None, label=method)
        ax.set_title(f"{metric} ({mode})", fontsize=9)
        ax.set_xlabel("fraction perturbed", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(backbone, fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def write_report(run_dir: Path, rows: list[dict[str, Any]], curves: dict[tuple[str, str, str, str], list[float]],
                 info: dict[str, Any], store: MapStore, instances: Subset, backbones: list[str],
                 num_examples: int = 6) -> None:
    text = markdown(rows, info)
    atomic_write(run_dir / "results.md", lambda tmp: tmp.write_text(text))
    write_json(run_dir / "curves.json", {"/".join(k): v for k, v in curves.items()})
    for backbone in backbones:
        map_grid(run_dir / f"maps_{backbone}.png", store, backbone, instances, num_examples)
        curve_plot(run_dir / f"curves_{backbone}.png", curves, backbone)
    print(text, flush=True)

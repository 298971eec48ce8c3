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

from ltx.models.explained import ExplainedModel  # noqa: E402
from ltx.store import MapStore, atomic_write  # noqa: E402

log = logging.getLogger(__name__)


def results_table(rows: list[dict[str, Any]], backbone: str) -> str:
    """One markdown table per backbone: methods × (metric, class mode)."""
    cells: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    columns: list[tuple[str, str]] = []
    for row in rows:
        if row["backbone"] != backbone:
            continue
        column = (row["metric"], row["class_mode"])
        if column not in columns:
            columns.append(column)
        cells[row["method"]][column] = row["value"]
    header = "| method | " + " | ".join(f"{m} ({c})" for m, c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for method, values in cells.items():
        lines.append(f"| {method} | " + " | ".join(
            f"{values[c]:.4g}" if c in values else "–" for c in columns) + " |")
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    parts = ["# Results", ""]
    for backbone, acc in info["blackbox_accuracy"].items():
        parts += [f"## {backbone}", "", f"Black-box test accuracy: {100 * acc:.2f} %", "",
                  results_table(rows, backbone), ""]
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


def write_report(run_dir: Path, rows: list[dict[str, Any]], info: dict[str, Any], store: MapStore,
                 instances: Subset, explained: dict[str, ExplainedModel], num_examples: int = 6) -> None:
    text = markdown(rows, info)
    atomic_write(run_dir / "results.md", lambda tmp: tmp.write_text(text))
    for backbone in explained:
        map_grid(run_dir / f"maps_{backbone}.png", store, backbone, instances, num_examples)
    print(text, flush=True)


__all__ = ["markdown", "results_table", "write_report"]

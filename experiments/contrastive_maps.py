"""Where a run's contrastive maps differ from its pointwise ones (issue 18, part 2).

    python experiments/contrastive_maps.py RUN_DIR [--pointwise predicted] [--contrastive contrastive]

For every backbone and method with maps in both class modes (a run of `+experiment=contrastive`), on
the images both explain: the mean Spearman rank correlation between an image's two maps (1: the
same ranking, so the same removal curves) and their SSIM, as the sanity checks compute them
(`ltx.stages.sanity.map_similarity`: a constant map correlates 0 with any other; `constant` counts
the images where either map is), the overlap (IoU) of their top-decile pixels, and, on data with
ground-truth masks, the share of each map's top decile that lies on the key object. Only the
images whose contrastive pair explains the pointwise class (c the same) count. Prints a markdown
table and writes contrastive_maps.md into the run directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ltx.models.explainer import upsample_to_image
from ltx.pipeline import prepare_data
from ltx.stages.sanity import map_similarity
from ltx.store import MapKey, MapStore, atomic_write

TOP = 0.1  # the share of a map's pixels called its top


def top_pixels(maps: torch.Tensor) -> torch.Tensor:
    """(N, H·W) bool: each map's TOP most salient pixels (ties by flat index, as the removal tests)."""
    flat = maps.flatten(1)
    count = int(TOP * flat.shape[1])
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :count]
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True)


def compare(pointwise: torch.Tensor, contrastive: torch.Tensor,
            objects: torch.Tensor | None) -> dict[str, float]:
    """Over images: ρ (mean and lowest), SSIM, how many have a constant map, the top-decile IoU and
    (with `objects`, (N, H·W) bool) each top's share on the object."""
    rho, ssim = map_similarity(pointwise, contrastive)
    constant = ((pointwise.flatten(1).std(1) == 0) | (contrastive.flatten(1).std(1) == 0)).sum()
    top_a, top_b = top_pixels(pointwise), top_pixels(contrastive)
    iou = (top_a & top_b).sum(1) / (top_a | top_b).sum(1)
    row = {"images": len(pointwise), "constant": int(constant), "rho": float(rho.mean()),
           "rho_min": float(rho.min()), "ssim": float(ssim.mean()), "top_iou": float(iou.mean())}
    if objects is not None:
        row["object_pointwise"] = float(((top_a & objects).sum(1) / top_a.sum(1)).mean())
        row["object_contrastive"] = float(((top_b & objects).sum(1) / top_b.sum(1)).mean())
    return row


def collect(run_dir: Path, pointwise_mode: str, contrastive_mode: str) -> list[dict[str, object]]:
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    _, instances = prepare_data(cfg)
    items = {int(item["index"]): item for item in (instances[n] for n in range(len(instances)))}
    size = (int(cfg.data.image_size),) * 2
    store = MapStore(run_dir / "maps")
    rows: list[dict[str, object]] = []
    for key in store.keys():
        other = MapKey(key.backbone, key.method, contrastive_mode)
        if key.class_mode != pointwise_mode or other not in store.keys():
            continue
        a, b = store.load(key), store.load(other)
        in_b = {int(i): n for n, i in enumerate(b["index"])}
        # rows (pointwise, contrastive) of the images both explain, where the pair's c is the pointwise class
        both = [(n, in_b[int(i)]) for n, i in enumerate(a["index"])
                if int(i) in in_b and a["classes"][n] == b["classes"][in_b[int(i)], 0]]
        if not both:
            continue
        rows_a, rows_b = (list(r) for r in zip(*both))
        ids = a["index"][rows_a].tolist()
        objects = None
        if items[ids[0]].get("mask") is not None:
            objects = torch.stack([items[i]["mask"].reshape(-1) > 0 for i in ids])
        rows.append({"backbone": key.backbone, "method": key.method,
                     **compare(upsample_to_image(a["maps"][rows_a].float(), size),
                               upsample_to_image(b["maps"][rows_b].float(), size), objects)})
    return rows


def markdown(rows: list[dict[str, object]]) -> str:
    names = ("images", "constant", "rho", "rho_min", "ssim", "top_iou", "object_pointwise", "object_contrastive")
    columns = [c for c in names if any(c in r for r in rows)]
    lines = ["| backbone | method | " + " | ".join(columns) + " |", "|---|---|" + "---:|" * len(columns)]
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "–")) for c in columns]
        lines.append(f"| {r['backbone']} | {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--pointwise", default="predicted")
    parser.add_argument("--contrastive", default="contrastive")
    args = parser.parse_args()
    table = markdown(collect(args.run_dir, args.pointwise, args.contrastive))
    print(table)
    atomic_write(args.run_dir / "contrastive_maps.md", lambda tmp: tmp.write_text(table + "\n"))


if __name__ == "__main__":
    main()

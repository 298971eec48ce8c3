"""Instance-batched against one-by-one finetuning on a run's trained black boxes and explainers.

For every backbone of the run (its config, its cached black boxes, its predicted-class explainers),
on the first `--images` instances of the run's split, finetunes `--steps` steps per image at each
`--lrs`, for every scope, in float32 and in float64 (the engine and the images `.double()`), once
with all instances together and once one by one (the same engine at B = 1), and prints:

- the largest |batched − one by one| map difference, and how far the maps moved from the
  pretrained ones (so that agreeing is not agreeing on an unchanged map);
- for float32 and scope `all`, the paper suite (POS/NEG/INS/DEL) of both sets of maps.

    python experiments/finetune_equivalence.py outputs/2026-12-07/04-00-00 --images 8 --steps 10
"""

from __future__ import annotations

import argparse
import copy
import subprocess
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file

from ltx.finetune import Finetuner, FinetuneSettings
from ltx.metrics import PerturbationSuite, create_metric
from ltx.pipeline import prepare_data
from ltx.stages.blackbox import ensure_blackbox
from ltx.stages.pretrain import new_explainer

SUITE = ("pos", "neg", "ins", "del")


def paper_suite(explained, images: torch.Tensor, maps: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    suite = PerturbationSuite({name: create_metric(name, explained) for name in SUITE})
    suite.update(images, maps.float(), labels)
    return {name: float(value) for name, value in suite.compute().items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished `python -m ltx.run` output directory")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lrs", type=float, nargs="+", default=[2e-5, 2e-3])
    parser.add_argument("--scopes", nargs="+", default=["all", "head", "lora"])
    args = parser.parse_args()

    cfg = OmegaConf.load(args.run_dir / ".hydra" / "config.yaml")
    cfg.paths.output_dir = str(args.run_dir)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=False).stdout.strip()
    print(f"commit {commit}, torch {torch.__version__}, {torch.get_num_threads()} threads; run {args.run_dir}; "
          f"{args.images} images, {args.steps} steps\n")
    datamodule, instances = prepare_data(cfg)
    items = [instances[i] for i in range(min(args.images, len(instances)))]
    images = torch.stack([item["image"] for item in items])
    labels = torch.tensor([int(item["label"]) for item in items])
    print("| backbone | lr | scope | dtype | max Δmap batched vs one by one | max change from pLTX | "
          "POS / NEG / INS / DEL one by one | batched |")
    print("|---|---|---|---|---:|---:|---|---|")
    for name, spec in cfg.backbone.items():
        explained = ensure_blackbox(cfg, name, spec, datamodule)
        classes = explained.predict(images)
        explainer, masking, holder = new_explainer(cfg, explained)
        holder.load_state_dict(load_file(args.run_dir / "explainers" / name / "predicted.safetensors"))
        for lr in args.lrs:
            for scope in args.scopes:
                for dtype in (torch.float32, torch.float64):
                    parts = (copy.deepcopy(explained), copy.deepcopy(explainer), copy.deepcopy(masking))
                    engine = Finetuner(*parts, instantiate(cfg.loss),
                                       FinetuneSettings(steps=args.steps, lr=lr, scope=scope)).to(dtype)
                    x = images.to(dtype)
                    together = engine.finetune(x, classes)["maps"]
                    alone = torch.cat([engine.finetune(x[i:i + 1], classes[i:i + 1])["maps"]
                                       for i in range(len(x))])
                    start = engine.finetune_together(x, classes, 0)["maps"]
                    suites = ""
                    if dtype == torch.float32 and scope == "all":
                        a, b = (paper_suite(explained, images, m, labels) for m in (alone, together))
                        suites = " | ".join(" / ".join(f"{s[k]:.2f}" for k in SUITE) for s in (a, b))
                    print(f"| {name} | {lr:g} | {scope} | {str(dtype).split('.')[1]} | "
                          f"{(together - alone).abs().max():.1e} | {(together - start).abs().max():.1e} | "
                          f"{suites or '– | –'} |", flush=True)


if __name__ == "__main__":
    main()

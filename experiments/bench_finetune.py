"""Benchmark: LTX's per-instance finetuning, the paper's one-by-one loop against instance batching.

For each model, in one run on the same machine, the same instances and the same steps, prints one
markdown table with a row per configuration:

- `seq`: the paper's loop: `Finetuner.finetune` (`ltx.finetune`) called on one image at a time (B = 1, the
  same code and maths as the batched rows, run plainly without vmap);
- `B=k`: k instances finetuned together (`instance_batch_size=k`; k is capped at the number of
  instances), and `auto` (the memory probe's choice), for each `--scopes` (all = the paper,
  head, lora), plus `--extras` (bf16 autocast / torch.compile) on the largest batched scope=all;
- `pLTX`: the pretrained explainer's map (steps=0), and Grad-CAM, IG and RISE at the project's
  defaults (conf/method/*.yaml), for the cost of one explained image.

Columns: instances/s and seconds per instance; the speed-up over the sequential loop of the same
scope (`× seq`) and over the paper's loop (scope=all, `× paper`); the peak memory one finetuning
step allocates, per instance; and the quality check: the mean LTX loss reached, the largest
|Δ| between the row's maps and its scope's sequential maps (batched = one-by-one), and the mean
|Δ| from the paper's (scope=all, sequential) maps (what a cheaper scope gives up); NEG and INS
(paper protocol, predicted class) of every row's maps, and the pointing game on the shapes
models' ground truth, so cost sits beside quality for LTX and the baselines alike.

Timed configurations are interleaved (each repeat runs every configuration once, in turn) and
each keeps its fastest repeat, so load from other processes hits all of them alike. Models with
random weights unless `--blackbox NAME=PATH` / `--explainer NAME=PATH` load trained ones (the
explainer file may be the pipeline's `explainers/<name>/<mode>.safetensors`).

    python experiments/bench_finetune.py                     # CPU: 64 px rows, then 224 px with 4 instances, 3 steps
    python experiments/bench_finetune.py --device cuda --instances 64 --steps 25
    python experiments/bench_finetune.py --models shapes_vit --scopes all lora --batch-sizes 8 auto
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ltx.finetune import Finetuner, FinetuneSettings
from ltx.finetune.memory import peak_memory
from ltx.losses import LTXLoss
from ltx.masking import ConstantBaseline
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import build_explainer
from ltx.models.zoo import create_network, wrap

CONF = Path(__file__).resolve().parents[1] / "conf"
#: name → (timm model, classes, image size, mean/std); the 224 px ones are the paper's black boxes.
MODELS = {
    "shapes_vit": ("ltx_shapes_vit", 8, 64, None),
    "shapes_resnet": ("ltx_shapes_resnet", 8, 64, None),
    "vit_b": ("vit_base_patch16_224", 1000, 224, ((0.5,) * 3, (0.5,) * 3)),
    "resnet101": ("resnet101", 1000, 224, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),
}
METHOD_CONFIGS = {"gradcam": "gradcam", "ig": "ig", "rise": "rise"}


def build(name: str, device: torch.device, blackbox: str | None, explainer_path: str | None):
    timm_name, num_classes, size, norm = MODELS[name]
    torch.manual_seed(0)
    network = create_network(timm_name, num_classes=num_classes, weights=blackbox or "random")
    mean, std = norm if norm else (None, None)
    explained = wrap(network, name=name, image_size=size, mean=mean, std=std)
    explainer = build_explainer(explained)
    if explainer_path:
        from safetensors.torch import load_file

        state = load_file(explainer_path)
        if any(k.startswith("explainer.") for k in state):  # the pipeline's explainer + masking file
            state = {k[len("explainer."):]: v for k, v in state.items() if k.startswith("explainer.")}
        explainer.load_state_dict(state)
    return explained.to(device), explainer.to(device)


def instances(name: str, count: int, explained: ExplainedModel,
              device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images and ground-truth object masks: shapes test images for the shapes models, else random
    images without masks."""
    size = explained.image_size
    if name.startswith("shapes"):
        from ltx.data import ShapesDataModule

        data = ShapesDataModule(train_size=0, val_size=0, test_size=count, image_size=size, seed=0)
        data.setup()
        samples = [data.test_set[i] for i in range(count)]
        return (torch.stack([s["image"] for s in samples]).to(device),
                torch.stack([s["mask"] for s in samples]).bool().to(device))
    generator = torch.Generator().manual_seed(0)
    return torch.rand(count, 3, size, size, generator=generator).to(device), None


def quality(explained: ExplainedModel, images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor,
            gt_masks: torch.Tensor | None) -> dict[str, float]:
    """NEG and INS (paper protocol, predicted class; higher is better) and, with ground truth, the
    pointing game, for the first len(maps) instances."""
    from ltx.metrics import create_metric

    n = len(maps)
    names = ["neg", "ins"] + (["pointing_game"] if gt_masks is not None else [])
    out = {}
    for metric_name in names:
        metric = create_metric(metric_name, explained).to(images.device)
        metric.update(images[:n], maps.float(), classes[:n], None if gt_masks is None else gt_masks[:n])
        out[metric_name] = float(metric.compute())
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


@dataclass
class Row:
    """One timed configuration: `run()` explains every instance; `probe()` one chunk, one step."""

    model: str
    method: str
    scope: str
    batch: str
    run: Callable[[], dict[str, torch.Tensor] | torch.Tensor]
    probe: Callable[[], Any] | None = None
    per_probe: int = 1  # instances in the probe
    count: int = 1  # instances per run
    scale: float = 1.0  # time multiplier (RISE timed on fewer masks)
    seq_of: str | None = None  # label of the sequential row of the same scope
    times: list[float] = field(default_factory=list)
    out: Any = None
    peak: float | None = None
    warm: Callable[[], Any] | None = None  # warm-up (default: `probe`)

    @property
    def seconds(self) -> float:
        return min(self.times) * self.scale / self.count


def finetune_rows(name: str, explained: ExplainedModel, explainer, images: torch.Tensor, classes: torch.Tensor,
                  args: argparse.Namespace, steps: int) -> list[Row]:
    count = len(images)
    rows: list[Row] = []

    def engine(**settings: Any) -> Finetuner:
        return Finetuner(explained, explainer, ConstantBaseline().to(images.device), LTXLoss(),
                         FinetuneSettings(**settings))

    def module(scope: str, batch: int | str | None, **kwargs: Any) -> Finetuner:
        return engine(steps=steps, scope=scope, lora_rank=args.lora_rank, instance_batch_size=batch,
                      memory_budget=args.memory_budget, **kwargs)

    def sequential(m: Finetuner) -> Callable[[], dict[str, torch.Tensor]]:
        def run() -> dict[str, torch.Tensor]:
            alone = [m.finetune(images[i:i + 1], classes[i:i + 1]) for i in range(count)]
            return {k: torch.cat([a[k] for a in alone]) for k in alone[0]}
        return run

    def one_step(m: Finetuner, b: int) -> Callable[[], Any]:
        return lambda: m.finetune_together(images[:b], classes[:b], 1)

    for scope in args.scopes:
        seq = module(scope, 1)
        label = f"{scope} seq"
        rows.append(Row(name, "ltx", scope, "seq (B=1)", sequential(seq), one_step(seq, 1), 1, count,
                        seq_of=label))
        sizes: dict[int, str] = {}
        for requested in args.batch_sizes:
            if requested == "auto":
                probe = module(scope, "auto")
                b = min(probe.resolve_instance_batch_size(images, classes), count)
                tag = f"auto={probe.auto_probe['instance_batch_size']}"
            else:
                b, tag = min(int(requested), count), str(requested)
            if b == 1 or b in sizes:  # B=1 is the sequential loop's row
                if b in sizes:
                    sizes[b] += f", {tag}"
                continue
            sizes[b] = tag if str(b) == tag else f"{b} ({tag})"
        for b, tag in sizes.items():
            m = module(scope, b)
            rows.append(Row(name, "ltx", scope, f"B={tag}", lambda m=m: m.finetune(images, classes), one_step(m, b), b,
                            count, seq_of=label))
    if args.extras and "all" in args.scopes:
        b = max(r.per_probe for r in rows if r.scope == "all")
        for extra in args.extras:
            kwargs = {"precision": "bf16" if "bf16" in extra else "32", "compile": "compile" in extra}
            m = module("all", b, **kwargs)
            rows.append(Row(name, "ltx", "all", f"B={b} {extra}", lambda m=m: m.finetune(images, classes),
                            one_step(m, b), b, count, seq_of="all seq"))
    pltx = engine(steps=0, instance_batch_size=min(count, 32))
    rows.append(Row(name, "pLTX (steps=0)", "–", f"B={min(count, 32)}", lambda: pltx.finetune(images, classes),
                    None, 1, count))
    return rows


def method_rows(name: str, explained: ExplainedModel, images: torch.Tensor, classes: torch.Tensor,
                args: argparse.Namespace, count: int) -> list[Row]:
    import yaml

    from ltx.methods import create_method

    rows = []
    count = min(count, len(images))
    for method in args.methods:
        conf = yaml.safe_load((CONF / "method" / f"{METHOD_CONFIGS[method]}.yaml").read_text())
        kwargs = {k: v for k, v in conf.items() if not k.startswith("_")}
        label, scale = method, 1.0
        cap = args.rise_max_masks
        if cap is None and args.device == "cpu" and explained.image_size >= 128:
            cap = 100
        if method == "rise" and cap and cap < kwargs["num_masks"]:
            label, scale = f"rise ({kwargs['num_masks']} masks, timed on {cap})", kwargs["num_masks"] / cap
            kwargs["num_masks"] = cap
        try:
            explain = create_method(method, explained, **kwargs)
        except Exception as err:  # noqa: BLE001  (a missing optional library on a device machine, say)
            print(f"<!-- {method}: skipped ({type(err).__name__}: {err}) -->")
            continue
        part, part_classes = images[:count], classes[:count]
        warm = (lambda e=explain, x=part, c=part_classes: e(x[:1], c[:1])) if args.device != "cpu" else (lambda: None)
        rows.append(Row(name, label, "–", f"{count} images", lambda e=explain, x=part, c=part_classes: e(x, c), None, 1,
                        count, warm=warm, scale=scale))
    return rows


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def bench_model(name: str, args: argparse.Namespace, count: int, steps: int, method_images: int) -> list[str]:
    device = torch.device(args.device)
    explained, explainer = build(name, device, args.blackbox.get(name), args.explainer.get(name))
    images, gt_masks = instances(name, count, explained, device)
    classes = explained.predict(images)
    rows = finetune_rows(name, explained, explainer, images, classes, args, steps)
    if args.methods:
        rows += method_rows(name, explained, images, classes, args, method_images)
    for row in rows:  # warm-up: kernels, allocator, compilation (one step on one chunk; methods: CUDA only)
        (row.warm or row.probe or row.run)()
    for _ in range(args.repeats):  # interleaved
        for row in rows:
            seconds, row.out = timed(row.run, device)
            row.times.append(seconds)
    for row in rows:  # peak memory of one finetuning step, outside the timed runs
        if row.probe is not None:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            row.peak = peak_memory(row.probe, device) / row.per_probe / 2**20
    by_label = {f"{r.scope} seq": r for r in rows if r.batch.startswith("seq")}
    paper = by_label.get("all seq")
    lines = []
    for row in rows:
        seq = by_label.get(row.seq_of) if row.seq_of else None
        maps = row.out["maps"] if isinstance(row.out, dict) else row.out
        loss = float(row.out["loss"].mean()) if isinstance(row.out, dict) else None
        same = float((maps - seq.out["maps"]).abs().max()) if seq is not None else None
        vs_paper = float((maps - paper.out["maps"]).abs().mean()) if paper is not None and loss is not None else None
        speed = 1 / row.seconds
        scores = quality(explained, images, maps, classes, gt_masks)
        lines.append(
            f"| {name} | {row.method} | {row.scope} | {row.batch} | {speed:.2f} | {row.seconds:.3f} | "
            f"{fmt(seq.seconds / row.seconds if seq else None, '.2f')} | "
            f"{fmt(paper.seconds / row.seconds if paper else None, '.2f')} | {fmt(row.peak, '.1f')} | "
            f"{fmt(loss, '.4f')} | {fmt(same, '.1e')} | {fmt(vs_paper, '.4f')} | {scores['neg']:.1f} | "
            f"{scores['ins']:.1f} | {fmt(scores.get('pointing_game'), '.2f')} |")
    del rows
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return lines


def per_model(values: list[int], names: list[str]) -> dict[str, int]:
    """One value for all models, or [value for 64 px models, value for 224 px models]."""
    return {n: values[0] if len(values) == 1 else values[0 if MODELS[n][2] < 128 else 1] for n in names}


def pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--instances", nargs="+", type=int, default=None,
                        help="instances per model; two values: 64 px models, 224 px models (default cpu: 32 4, cuda: 64)")
    parser.add_argument("--steps", nargs="+", type=int, default=None,
                        help="finetuning steps; two values as for --instances (default cpu: 10 3, cuda: 25)")
    parser.add_argument("--batch-sizes", nargs="+", default=["1", "8", "32", "auto"])
    parser.add_argument("--scopes", nargs="+", default=["all", "head", "lora"], choices=["all", "head", "lora"])
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--extras", nargs="*", default=None, choices=["bf16", "compile", "bf16+compile"],
                        help="variants of the largest batched scope=all row (default cuda: all three, cpu: none)")
    parser.add_argument("--methods", nargs="*", default=["gradcam", "ig", "rise"], choices=list(METHOD_CONFIGS))
    parser.add_argument("--method-images", nargs="+", type=int, default=None,
                        help="images for the baselines' cost; two values as for --instances (default cpu: 4 1, cuda: 8)")
    parser.add_argument("--rise-max-masks", type=int, default=None,
                        help="time RISE on this many masks and scale up (default: 100 on CPU at 224 px, else all)")
    parser.add_argument("--memory-budget", type=float, default=None, help="GiB for instance_batch_size=auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--blackbox", nargs="*", default=[], help="NAME=PATH of trained black-box weights")
    parser.add_argument("--explainer", nargs="*", default=[], help="NAME=PATH of a pretrained explainer")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    args.instances = args.instances or ([64] if cuda else [32, 4])
    args.steps = args.steps or ([25] if cuda else [10, 3])
    args.extras = (["bf16", "compile", "bf16+compile"] if cuda else []) if args.extras is None else args.extras
    args.blackbox, args.explainer = pairs(args.blackbox), pairs(args.explainer)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.method_images = args.method_images or ([8] if cuda else [4, 1])
    counts, steps = per_model(args.instances, args.models), per_model(args.steps, args.models)
    method_images = per_model(args.method_images, args.models)

    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    load = lambda: " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Per-instance finetuning on {where}, torch {torch.__version__}; load average at start: {load()}")
    print("Instances / steps: " + ", ".join(f"{n} {counts[n]} / {steps[n]}" for n in args.models)
          + f"; select_by=last, lr 2e-3, paper loss; lora rank {args.lora_rank}; best of {args.repeats} interleaved repeats.")
    print()
    print("| model | method | scope | B | inst/s | s/inst | × seq | × paper | peak MiB/inst | loss | max Δmap vs seq "
          "| mean Δmap vs paper | NEG ↑ | INS ↑ | pointing ↑ |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        for line in bench_model(name, args, counts[name], steps[name], method_images[name]):
            print(line, flush=True)
    print()
    print(f"Load average at end: {load()}. `× seq`: against the sequential loop of the same scope; `× paper`: "
          "against the paper's loop (scope=all, one image at a time). peak MiB/inst: one finetuning step's peak "
          "allocation divided by its instances (CPU: from torch.profiler). NEG / INS: paper protocol, predicted class, "
          "on the row's maps (the baselines: on their first images only); pointing: the pointing game against "
          "the shapes objects' ground truth.")


if __name__ == "__main__":
    main()

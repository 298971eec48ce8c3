"""Benchmark: LTX's per-instance finetuning, the paper's one-by-one loop against instance batching.

Everything but the rows comes from the composed config, as a run would use it: the data (the
instances are the first images of `explain.split`), the black boxes (`ensure_blackbox`: cached,
trained once, or loaded), the explainer and masking groups, the loss and LTX's finetuning settings
(`method.ltx`, `finetune`). `--run DIR` takes a finished run's config and its pretrained
explainers (`DIR/explainers/<backbone>/predicted.safetensors`), so that cost sits beside the
quality the default really gives; without it, the explainers are not pretrained (cost only) and
Hydra overrides after the options compose another config (`+experiment=vit_b ...`).

For each black box, in one run on the same machine, the same instances and the same steps, one
markdown table with a row per configuration:

- `seq`: the paper's loop: `Finetuner.finetune` called on one image at a time (B = 1, the same code
  and maths as the batched rows);
- `B=k`: k instances finetuned together (`instance_batch_size=k`, capped at the instances), and
  `auto` (the memory probe's choice), for each `--scopes`, plus `--extras` (bf16 autocast /
  torch.compile) on the largest batched scope=all; `vmap`: the same B with vmap's generic path
  instead of the stacked layers (`Finetuner.stacked_layers`);
- `pLTX`: the pretrained explainer's map (steps=0), and Grad-CAM, IG and RISE at the config's
  settings, for the cost of one explained image.

Columns: instances/s and seconds per instance; the speed-up over the sequential loop of the same
scope (`× seq`) and over the paper's loop (scope=all, `× paper`); the share of this machine's
matmul throughput the row reaches (`% peak`: the row's FLOPs per second, counted by
`torch.utils.flop_counter`, over a large float32 matmul's, measured at start: the ceiling no
batching can pass); the peak memory of one step per instance; the mean LTX loss; the largest
|Δ| between the row's maps and its scope's sequential maps; the mean |Δ| from the paper's maps;
NEG and INS (paper protocol, predicted class) and, where the data has ground truth, the pointing
game. Configurations are interleaved (each repeat runs each once) and keep their fastest repeat.

    python experiments/bench_finetune.py --run outputs/<default run>          # the default's models
    python experiments/bench_finetune.py --scopes all --batch-sizes 32 --run outputs/<run>
    python experiments/bench_finetune.py --device cuda --instances 64 +experiment=vit_b \\
        backbone.vit_b.weights=random data.root=<ImageFolder>
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from ltx.finetune import Finetuner, FinetuneSettings
from ltx.finetune.memory import peak_memory
from ltx.masking import Masking
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer
from ltx.models.zoo import load_state, read_checkpoint
from ltx.pipeline import prepare_data
from ltx.stages.blackbox import ensure_blackbox
from ltx.stages.pretrain import new_explainer

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("gradcam", "ig", "rise")


def load_config(run: str | None, overrides: list[str]) -> DictConfig:
    """A finished run's config (its output directory set to the run), or the composed default."""
    if run:
        if overrides:
            raise SystemExit("error: Hydra overrides compose a new config; with --run the run's own is used")
        cfg = OmegaConf.load(Path(run) / ".hydra" / "config.yaml")
        cfg.paths.output_dir = str(run)
        return cfg
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    cfg.paths.output_dir = "."  # nothing is written; the black-box cache is cfg.paths.cache_dir
    OmegaConf.set_struct(cfg, False)
    cfg.pop("hydra")
    return cfg


def finetune_settings(cfg: DictConfig, steps: int | None) -> dict[str, Any]:
    """LTX's finetuning settings in this config (`method.ltx` with `finetune` interpolated), `steps` apart."""
    conf = cfg.method.get("ltx") or OmegaConf.load(ROOT / "conf" / "method" / "ltx.yaml")
    names = {f.name for f in fields(FinetuneSettings)}
    settings = {k: v for k, v in OmegaConf.to_container(conf, resolve=True).items() if k in names}
    return settings if steps is None else {**settings, "steps": steps}


def explainer_for(cfg: DictConfig, name: str, explained: ExplainedModel, path: str | None
                  ) -> tuple[Explainer, Masking, str]:
    """The config's explainer and masking, with the run's (or `path`'s) pretrained weights if any."""
    explainer, masking, holder = new_explainer(cfg, explained)
    file = Path(path) if path else Path(cfg.paths.output_dir) / "explainers" / name / "predicted.safetensors"
    if not file.is_file():
        if path:
            raise SystemExit(f"error: no explainer file {file}")
        return explainer, masking, "not pretrained (cost only: run with --run DIR for the default's quality)"
    load_state(holder, read_checkpoint(file)[0], file)  # as `ltx explain --explainer` reads it
    return explainer, masking, str(file)


def instances(dataset: Any, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The first `count` images to explain and their ground-truth masks (None without ground truth)."""
    samples = [dataset[i] for i in range(min(count, len(dataset)))]
    images = torch.stack([s["image"] for s in samples]).to(device)
    masks = torch.stack([s["mask"] for s in samples]).bool().to(device) if "mask" in samples[0] else None
    return images, masks


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
    flops: float | None = None  # per instance
    times: list[float] = field(default_factory=list)
    out: Any = None
    peak: float | None = None
    warm: Callable[[], Any] | None = None  # warm-up (default: `probe`)

    @property
    def seconds(self) -> float:
        return min(self.times) * self.scale / self.count


def counted_flops(fn: Callable[[], Any]) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def finetune_rows(name: str, parts: tuple, images: torch.Tensor, classes: torch.Tensor,
                  args: argparse.Namespace, settings: dict[str, Any]) -> list[Row]:
    explained, explainer, masking, loss = parts
    count = len(images)
    rows: list[Row] = []

    def engine(stacked: bool = True, **row: Any) -> Finetuner:
        finetuner = Finetuner(explained, explainer, masking, loss, FinetuneSettings(**{**settings, **row}))
        finetuner.stacked_layers = stacked
        return finetuner

    def module(scope: str, batch: int | str | None, **kwargs: Any) -> Finetuner:
        return engine(scope=scope, instance_batch_size=batch, memory_budget=args.memory_budget, **kwargs)

    def sequential(m: Finetuner) -> Callable[[], dict[str, torch.Tensor]]:
        def run() -> dict[str, torch.Tensor]:
            alone = [m.finetune(images[i:i + 1], classes[i:i + 1]) for i in range(count)]
            return {k: torch.cat([a[k] for a in alone]) for k in alone[0]}
        return run

    def one_step(m: Finetuner, b: int) -> Callable[[], Any]:
        return lambda: m.finetune_together(images[:b], classes[:b], 1)

    def batched(label: str, scope: str, m: Finetuner, b: int, flops: float) -> Row:
        return Row(name, "ltx", scope, label, lambda: m.finetune(images, classes), one_step(m, b), b, count,
                   seq_of=f"{scope} seq", flops=flops)

    for scope in args.scopes:
        seq = module(scope, 1)
        flops = counted_flops(lambda m=seq: m.finetune(images[:1], classes[:1]))
        rows.append(Row(name, "ltx", scope, "seq (B=1)", sequential(seq), one_step(seq, 1), 1, count,
                        seq_of=f"{scope} seq", flops=flops))
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
            rows.append(batched(f"B={tag}", scope, module(scope, b), b, flops))
        if sizes and args.vmap:
            b = max(sizes)
            rows.append(batched(f"B={b} vmap", scope, module(scope, b, stacked=False), b, flops))
    if args.extras and "all" in args.scopes:
        b = max(r.per_probe for r in rows if r.scope == "all")
        flops = next(r.flops for r in rows if r.scope == "all")
        for extra in args.extras:
            kwargs = {"precision": "bf16" if "bf16" in extra else "32", "compile": "compile" in extra}
            rows.append(batched(f"B={b} {extra}", "all", module("all", b, **kwargs), b, flops))
    pltx = engine(steps=0, instance_batch_size=min(count, 32))
    rows.append(Row(name, "pLTX (steps=0)", "–", f"B={min(count, 32)}", lambda: pltx.finetune(images, classes),
                    None, 1, count, flops=counted_flops(lambda: pltx.finetune(images[:1], classes[:1]))))
    return rows


def method_rows(cfg: DictConfig, name: str, explained: ExplainedModel, images: torch.Tensor,
                classes: torch.Tensor, args: argparse.Namespace, count: int) -> list[Row]:
    from ltx.methods import MethodNotApplicable

    rows = []
    count = min(count, len(images))
    for method in args.methods:
        conf = cfg.method.get(method) or OmegaConf.load(ROOT / "conf" / "method" / f"{method}.yaml")
        conf = OmegaConf.to_container(conf, resolve=True)
        label, scale = method, 1.0
        cap = args.rise_max_masks
        if cap is None and args.device == "cpu" and explained.image_size >= 128:
            cap = 100
        if method == "rise" and cap and cap < conf["num_masks"]:
            label, scale = f"rise ({conf['num_masks']} masks, timed on {cap})", conf["num_masks"] / cap
            conf["num_masks"] = cap
        try:
            explain = instantiate(conf)(model=explained)
        except MethodNotApplicable as err:
            print(f"<!-- {name} {method}: skipped ({err}) -->")
            continue
        part, part_classes = images[:count], classes[:count]
        warm = (lambda e=explain, x=part, c=part_classes: e(x[:1], c[:1])) if args.device != "cpu" else (lambda: None)
        rows.append(Row(name, label, "–", f"{count} images", lambda e=explain, x=part, c=part_classes: e(x, c), None, 1,
                        count, warm=warm, scale=scale,
                        flops=counted_flops(lambda e=explain, x=part, c=part_classes: e(x[:1], c[:1])) * scale))
    return rows


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def bench_model(cfg: DictConfig, name: str, explained: ExplainedModel, dataset: Any, args: argparse.Namespace,
                settings: dict[str, Any], peak: float) -> list[str]:
    device = torch.device(args.device)
    explainer, masking, source = explainer_for(cfg, name, explained, args.explainer.get(name))
    explained, explainer, masking = explained.to(device), explainer.to(device), masking.to(device)
    images, gt_masks = instances(dataset, args.instances, device)
    classes = explained.predict(images)
    print(f"<!-- {name}: explainer {source} -->", flush=True)
    rows = finetune_rows(name, (explained, explainer, masking, instantiate(cfg.loss)), images, classes, args,
                         settings)
    if args.methods:
        rows += method_rows(cfg, name, explained, images, classes, args, args.method_images)
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
        share = 100 * row.flops * speed / peak if row.flops else None
        scores = quality(explained, images, maps, classes, gt_masks)
        lines.append(
            f"| {name} | {row.method} | {row.scope} | {row.batch} | {speed:.2f} | {row.seconds:.3f} | "
            f"{fmt(seq.seconds / row.seconds if seq else None, '.2f')} | "
            f"{fmt(paper.seconds / row.seconds if paper else None, '.2f')} | {fmt(share, '.0f')} | "
            f"{fmt(row.peak, '.1f')} | {fmt(loss, '.4f')} | {fmt(same, '.1e')} | {fmt(vs_paper, '.4f')} | "
            f"{scores['neg']:.1f} | {scores['ins']:.1f} | {fmt(scores.get('pointing_game'), '.2f')} |")
    del rows
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return lines


def pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a large matmul on `device` (best of three): the ceiling the `% peak` column compares to."""
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(4):
        seconds, _ = timed(lambda: [a @ b for _ in range(10)], device)
        best = min(best, seconds)
    return 2 * n**3 * 10 / best


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def commit() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the composed config (without --run)")
    parser.add_argument("--run", default=None, help="a finished run: its config and pretrained explainers")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--models", nargs="+", default=None, help="backbones of the config (default: all)")
    parser.add_argument("--instances", type=int, default=None, help="instances per model (default cpu: 32, cuda: 64)")
    parser.add_argument("--steps", type=int, default=None, help="finetuning steps (default cpu: 10, cuda: the config's)")
    parser.add_argument("--batch-sizes", nargs="+", default=["1", "8", "32", "auto"])
    parser.add_argument("--scopes", nargs="+", default=["all", "head", "lora"], choices=["all", "head", "lora"])
    parser.add_argument("--no-vmap", dest="vmap", action="store_false",
                        help="leave out the row of the largest B through vmap's generic path")
    parser.add_argument("--extras", nargs="*", default=None, choices=["bf16", "compile", "bf16+compile"],
                        help="variants of the largest batched scope=all row (default cuda: all three, cpu: none)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--method-images", type=int, default=None, help="images for the baselines' cost (cpu: 4, cuda: 8)")
    parser.add_argument("--rise-max-masks", type=int, default=None,
                        help="time RISE on this many masks and scale up (default: 100 on CPU at 224 px, else all)")
    parser.add_argument("--memory-budget", type=float, default=None, help="GiB for instance_batch_size=auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--explainer", nargs="*", default=[], help="NAME=PATH of a pretrained explainer file")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    args.instances = args.instances or (64 if cuda else 32)
    args.extras = (["bf16", "compile", "bf16+compile"] if cuda else []) if args.extras is None else args.extras
    args.method_images = args.method_images or (8 if cuda else 4)
    args.explainer = pairs(args.explainer)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(args.run, args.overrides)
    settings = finetune_settings(cfg, args.steps if args.steps or cuda else 10)
    names = args.models or list(cfg.backbone)
    unknown = sorted(set(names) - set(cfg.backbone))
    if unknown:
        raise SystemExit(f"error: --models {unknown} are not backbones of the config ({list(cfg.backbone)})")
    cfg.explain.num_images = args.instances  # the run's own count may be smaller
    datamodule, dataset = prepare_data(cfg)
    device = torch.device(args.device)
    peak = matmul_rate(device)
    load = lambda: " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"Per-instance finetuning on {machine(device)}, torch {torch.__version__}, commit {commit()}; "
          f"load average at start: {load()}; float32 matmul: {peak / 1e9:.0f} GFLOP/s")
    print(f"Config: {'run ' + args.run if args.run else 'composed ' + ' '.join(args.overrides or ['(default)'])}; "
          f"data {cfg.data._target_.rsplit('.', 1)[-1]} ({cfg.explain.split} split, {len(dataset)} instances); "
          f"masking {cfg.masking._target_.rsplit('.', 1)[-1]}; loss {OmegaConf.to_container(cfg.loss, resolve=True)}")
    print(f"Finetuning: {settings} (rows set scope and instance_batch_size); best of {args.repeats} interleaved "
          f"repeats.")
    print()
    print("| model | method | scope | B | inst/s | s/inst | × seq | × paper | % peak | peak MiB/inst | loss "
          "| max Δmap vs seq | mean Δmap vs paper | NEG ↑ | INS ↑ | pointing ↑ |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        explained = ensure_blackbox(cfg, name, cfg.backbone[name], datamodule)
        for line in bench_model(cfg, name, explained, dataset, args, settings, peak):
            print(line, flush=True)
    print()
    print(f"Load average at end: {load()}. `× seq`: against the sequential loop of the same scope; `× paper`: "
          "against the paper's loop (scope=all, one image at a time). `% peak`: the row's counted FLOPs per "
          "second over a large matmul's. peak MiB/inst: one finetuning step's peak allocation divided by its "
          "instances (CPU: from torch.profiler). NEG / INS: paper protocol, predicted class, on the row's maps "
          "(the baselines: on their first images only); pointing: the pointing game against the data's ground "
          "truth (– without).")


if __name__ == "__main__":
    main()

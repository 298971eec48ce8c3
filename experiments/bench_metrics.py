"""Benchmark: each metric suite against its floor, the model's forward passes.

Suites (`--suites`): `paper` (POS, NEG, INS, DEL: conf/eval/paper.yaml) and `continuous`
(sufficiency, necessity at their default T = 11: conf/eval/continuous.yaml). For each model and
suite, in one run on the same model and images, prints
- suite: time of the suite's `PerturbationSuite.update` on N images (ranks or blend weights,
  perturbed inputs, forwards, scores, state), per image;
- floor: time of the suite's forward passes alone (`PerturbationSuite.passes_per_run`: paper, one
  run per removal order, POS/DEL and NEG/INS, so 2 · N · 10 images; continuous, one run per
  metric, 2 · N · 11) through the model, chunked the same way (per run), from one pre-built
  tensor of perturbed inputs;
- their ratio (goal: ≤ 1.15).

    python experiments/bench_metrics.py --models tiny_vit vit_base --images 64 4 --suites paper continuous
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import timm
import torch

from ltx.metrics import PerturbationSuite, create_metric
from ltx.models.explained import ExplainedModel

#: the metrics of each benchmarked suite (conf/eval/NAME.yaml), built with their default settings
SUITES = {"paper": ("pos", "neg", "ins", "del"), "continuous": ("sufficiency", "necessity")}
MODELS = ("tiny_vit", "vit_base")


def build(name: str) -> ExplainedModel:
    """Random-weight models wrapped to take [0, 1] images (normalisation inside)."""
    if name == "tiny_vit":
        net = timm.create_model("vit_tiny_patch16_224", img_size=64, patch_size=8, depth=4, embed_dim=128,
                                num_heads=4, num_classes=8)
        return ExplainedModel(net, mean=(0.5,) * 3, std=(0.5,) * 3, image_size=64, name=name)
    if name == "vit_base":
        net = timm.create_model("vit_base_patch16_224", pretrained=False)
        return ExplainedModel(net, mean=(0.5,) * 3, std=(0.5,) * 3, image_size=224, name=name)
    raise ValueError(f"unknown model {name!r}")


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def bench(name: str, suite_name: str, num_images: int, chunk_size: int, device: torch.device, repeats: int,
          seed: int) -> None:
    torch.manual_seed(seed)
    model = build(name).to(device)
    size = model.image_size
    images = torch.rand(num_images, 3, size, size, device=device)
    maps = torch.rand(num_images, size // 8, size // 8, device=device)
    labels = model.predict(images)  # curves then start at 1, as for a trained model's correct images
    suite = PerturbationSuite({metric: create_metric(metric, model, chunk_size=chunk_size).to(device)
                               for metric in SUITES[suite_name]})
    passes = suite.passes_per_run(size, size)
    # The floor's inputs: as many (image, step) inputs as the suite's runs have, built once,
    # outside the timing.
    keep = torch.rand(num_images * sum(passes), 1, size, size, device=device) > 0.5
    inputs = images.repeat_interleave(sum(passes), 0) * keep

    def update() -> None:
        suite.reset()
        suite.update(images, maps, labels)

    @torch.inference_mode()
    def floor() -> None:
        for run in inputs.split([num_images * steps for steps in passes]):
            for chunk in run.split(chunk_size):
                model(chunk)

    with torch.inference_mode():
        model(inputs[:chunk_size])  # warm-up: allocator, kernels
    # Alternate the two and keep each one's best run: the least disturbed by other load.
    floor_s = suite_s = float("inf")
    for _ in range(repeats):
        floor_s = min(floor_s, timed(floor, device))
        suite_s = min(suite_s, timed(update, device))
    values = "  ".join(f"{name}={float(value):.2f}" for name, value in suite.compute().items())
    forwards = len(inputs)
    print(f"{name:9s} {suite_name:10s} {size}px  N={num_images:<4d} chunk={chunk_size:<4d}"
          f" forwards={forwards:<6d} suite {1e3 * suite_s / num_images:10.3f} ms/img"
          f"  floor {1e3 * floor_s / num_images:10.3f} ms/img"
          f"  ratio {suite_s / floor_s:.3f}   ({values})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny_vit", "vit_base"], choices=MODELS)
    parser.add_argument("--images", nargs="+", type=int, default=[64, 4],
                        help="images per model (one value for all, or one per model)")
    parser.add_argument("--chunk-size", type=int, default=256, help="max images per forward pass")
    parser.add_argument("--suites", nargs="+", default=list(SUITES), choices=list(SUITES),
                        help="the suites to time, each against its own floor, one after the other per model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (best is kept)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = args.images if len(args.images) == len(args.models) else args.images[:1] * len(args.models)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    for name, count in zip(args.models, counts):
        for suite_name in args.suites:
            bench(name, suite_name, count, args.chunk_size, device, args.repeats, args.seed)


if __name__ == "__main__":
    main()

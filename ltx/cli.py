"""The `ltx` command.

`ltx explain IMAGES... --model NAME_OR_CHECKPOINT`: LTX explanations of a timm classifier on your
own images. The explainer is loaded (`--explainer`, e.g. a run's explainers/<backbone>/<mode>.safetensors)
or, without one, pretrained on the given images (plus `--pretrain-images`) for `--pretrain-steps`
steps and saved as explainer.safetensors for the next time; then a copy of it is finetuned on
each image (`ltx.methods.ltx.LTX`, `--steps`), as in the paper. Images of any size and mode are
resized straight to the model's input size; maps are returned at each image's own size.

`ltx report RUN_DIR`: (re)write a finished run's self-contained results.html.

Errors the user can fix end with one line naming the problem and the fix (`ltx.run`'s handling;
`LTX_DEBUG=1` shows the traceback). torch, timm and Lightning are imported inside the commands,
so `ltx --help` and an option out of range answer at once, not after seconds of imports.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig
    from torch.utils.data import Dataset

    from ltx.data.folder import ImageSource
    from ltx.losses import LTXLoss
    from ltx.masking import Masking
    from ltx.models.explained import ExplainedModel
    from ltx.models.explainer import Explainer

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


# --- options -----------------------------------------------------------------------------------------

def _number(kind: type, low: float, *, inclusive: bool = True) -> Callable[[str], Any]:
    """An argparse type: a `kind` number >= low (> low when not inclusive), else a one-line error."""
    bound = f"{'>=' if inclusive else '>'} {low}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} {bound}, got {text!r}") from None
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def _class_option(text: str) -> int | str:
    if text == "predicted":
        return text
    return _number(int, 0)(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltx", description="LTX explanations of image classifiers")
    commands = parser.add_subparsers(dest="command_name", required=True)

    ex = commands.add_parser(
        "explain", help="explain a classifier's predictions on your images",
        description="LTX explanations of a timm classifier on your images: an explainer is loaded "
                    "(--explainer) or pretrained on the images, then finetuned on each; writes a figure, "
                    "the raw map and index.html.")
    ex.set_defaults(command=explain)
    ex.add_argument("images", nargs="+",
                    help="image files, folders (searched recursively) or quoted glob patterns")
    ex.add_argument("--model", required=True, metavar="NAME_OR_CHECKPOINT",
                    help="a timm model name (pretrained weights from the hub or its local cache), or a "
                         "checkpoint file (.safetensors / .pth) whose architecture is in its metadata or "
                         "given by --arch")
    ex.add_argument("--arch", metavar="NAME",
                    help="the timm architecture of a --model checkpoint that does not name it")
    ex.add_argument("--num-classes", type=_number(int, 1), metavar="N",
                    help="classes of the model (default: the checkpoint's classifier, else timm's default)")
    ex.add_argument("--explainer", metavar="CKPT",
                    help="a pretrained explainer (.safetensors, as `ltx.run` writes under explainers/ or "
                         "`ltx explain` as explainer.safetensors)")
    ex.add_argument("--class", dest="class_", type=_class_option, default="predicted", metavar="N|predicted",
                    help="the class to explain: 'predicted' (the model's top-1 per image, default) or an "
                         "index")
    ex.add_argument("--out", type=Path, default=Path("ltx-explanations"), metavar="DIR",
                    help="output folder (default: %(default)s)")
    ex.add_argument("--steps", type=_number(int, 0),
                    help="finetuning steps per image (default: method.ltx.steps, 25; 0: the pretrained map)")
    ex.add_argument("--lr", type=_number(float, 0, inclusive=False), help="finetuning learning rate")
    ex.add_argument("--mask-weight", type=_number(float, 0),
                    help="weight of the mask size penalty (loss.mask_weight)")
    ex.add_argument("--pretrain-steps", type=_number(int, 1), default=100,
                    help="pretraining steps without --explainer (default: %(default)s)")
    ex.add_argument("--pretrain-images", nargs="+", default=[], metavar="IMAGES",
                    help="more images, folders or globs to pretrain the explainer on (not explained)")
    ex.add_argument("--batch-size", type=_number(int, 1), default=16,
                    help="images finetuned together, and the pretraining batch (default: %(default)s)")
    ex.add_argument("--top-k", type=_number(int, 1), default=5,
                    help="classes shown per image (default: %(default)s)")
    ex.add_argument("--labels", type=Path, metavar="FILE", help="a text file of class names, one per line")
    ex.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a Hydra override of the run config's explainer, masking, loss, pretrain, "
                         "method.ltx or finetune settings, e.g. --set masking=blur --set finetune.scope=head "
                         "(repeatable; an --explainer from a run keeps that run's explainer, masking and "
                         "loss settings)")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only warnings and errors")

    rep = commands.add_parser("report", help="write a finished run's self-contained results.html")
    rep.set_defaults(command=report)
    rep.add_argument("run_dir", type=Path, help="the output directory of `python -m ltx.run`")
    rep.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return parser


# --- ltx report ----------------------------------------------------------------------------------------

def report(args: argparse.Namespace) -> Path:
    """results.html of a finished run, from its results.csv, run_info.json and figures."""
    from ltx.report import write_html_report
    from ltx.store import read_results

    run_dir = args.run_dir
    needed = [run_dir / "results.csv", run_dir / "run_info.json"]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} has no {' or '.join(missing)}: give the output directory of a "
                                "finished `python -m ltx.run` (it prints it at the end)")
    info = json.loads(needed[1].read_text())
    path = write_html_report(run_dir, read_results(needed[0]), info, list(info["blackbox_accuracy"]))
    log.info("wrote %s", path)
    return path


# --- ltx explain ---------------------------------------------------------------------------------------

def writable_folder(out: Path) -> Path:
    """Create `out` and check that files can be written there, before any work is done."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"output folder {out} cannot be created: a file is in the way. "
                                 "Choose another folder with --out DIR.") from None
    except OSError as err:
        raise PermissionError(f"cannot write to the output folder {out} ({err.strerror}): "
                              "choose a writable folder with --out DIR.") from None
    return out


def load_model(args: argparse.Namespace) -> ExplainedModel:
    """The explained model: a timm name (hub weights) or a checkpoint (its metadata or --arch names it)."""
    import timm

    from ltx.models.zoo import Settings, checkpoint_architecture, create_network, wrap

    settings = Settings(name="--model / --arch", weights="--model /path/to/model.safetensors --arch NAME")
    path = Path(args.model).expanduser()
    if path.suffix in CHECKPOINT_SUFFIXES or path.is_file():
        arch = args.arch or checkpoint_architecture(path, settings)
        if not arch:
            raise ValueError(f"checkpoint {path} does not name its architecture: add --arch NAME (a timm "
                             "model name, e.g. resnet50).")
        network = create_network(arch, num_classes=args.num_classes, weights=str(path), settings=settings)
    else:
        arch = args.model
        network = create_network(arch, num_classes=args.num_classes, weights="hub", settings=settings)
    image_size = int(timm.data.resolve_model_data_config(network)["input_size"][-1])
    return wrap(network, name=arch, image_size=image_size)


def class_names(explained: ExplainedModel, labels_file: Path | None) -> list[str]:
    """Names of the model's classes: --labels, the timm config's label names, ImageNet's, or 'class i'."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    n = explained.num_classes
    if labels_file is not None:
        if not labels_file.is_file():
            raise FileNotFoundError(f"--labels file not found: {labels_file}")
        names = [line.strip() for line in labels_file.read_text().splitlines() if line.strip()]
        if len(names) != n:
            raise ValueError(f"--labels {labels_file} has {len(names)} names but the model has {n} classes: "
                             "give one name per class, one per line.")
        return names
    names = explained.model.pretrained_cfg.get("label_names")
    if names and len(names) == n:
        return list(names)
    subset = infer_imagenet_subset(explained.model)
    info = ImageNetInfo(subset) if subset else None
    if info is not None and info.num_classes() == n:
        return [info.index_to_description(i).split(",")[0] for i in range(n)]
    return [f"class {i}" for i in range(n)]


def cell_size(explained: ExplainedModel) -> int:
    """The side in pixels of one cell of the model's grid: the ViT patch, or the CNN's total stride."""
    if explained.patch_size is not None:
        return explained.patch_size
    info = getattr(explained.model, "feature_info", None)
    return int(info[-1]["reduction"]) if info else 1


def usable_images(sources: Sequence[ImageSource], min_side: int, role: str) -> list[Path]:
    """The readable images at least `min_side` px a side: a bad named file is an error, a bad file found
    in a folder or by a glob is skipped with a warning."""
    from ltx.data.folder import load_rgb

    usable = []
    for source in sources:
        try:
            width, height = load_rgb(source.path).size
            if min(width, height) < min_side:
                raise ValueError(f"image {source.path} is {width}x{height} px, smaller than one {min_side} "
                                 f"px patch of the model: use images of at least {min_side}x{min_side} px.")
        except ValueError as err:
            if source.named:
                raise
            log.warning("skipped: %s", err)
            continue
        usable.append(source.path)
    if not usable:
        raise ValueError(f"none of the {role} images can be used (see the warnings above).")
    return usable


def compose_settings(args: argparse.Namespace) -> DictConfig:
    """The explainer, masking, loss, pretrain, method.ltx and finetune settings: the run config's defaults with
    --set overrides, the explainer's own run settings when it comes from a run directory, then the options."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            cfg = compose(config_name="config", overrides=list(args.overrides))
        except HydraException as err:
            raise ValueError(f"--set {' '.join(args.overrides)}: {str(err).splitlines()[0]}") from None
    if args.explainer:
        # <run>/explainers/<backbone>/<mode>.safetensors: that run built it with its own settings
        parents = Path(args.explainer).expanduser().resolve().parents
        saved = parents[2] / ".hydra" / "config.yaml" if len(parents) > 2 else None
        if saved is not None and saved.is_file():
            run_cfg = OmegaConf.load(saved)
            for group in ("explainer", "masking", "loss"):
                cfg[group] = run_cfg[group]
            log.info("explainer, masking and loss settings of the run %s", saved.parents[1])
    for key, value in (("method.ltx.steps", args.steps), ("method.ltx.lr", args.lr),
                       ("loss.mask_weight", args.mask_weight)):
        if value is not None:
            OmegaConf.update(cfg, key, value)
    return cfg


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown --device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return device


def pretrain(cfg: DictConfig, explained: ExplainedModel, explainer: Explainer, masking: Masking,
             loss: LTXLoss, dataset: Dataset, *, class_mode: str, steps: int, batch_size: int,
             device: torch.device, seed: int, quiet: bool) -> None:
    """Pretrain the explainer on `dataset` for `steps` steps: the run's pretraining module (its
    optimiser and schedule, the run config's `pretrain` settings), counted in steps, not epochs."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from ltx.lit import expected_lightning_warnings
    from ltx.stages.pretrain import pretrain_module

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # device summary and tips: noise here
    module = pretrain_module(cfg, explained, explainer, masking, loss, class_mode, validate=False)
    loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    trainer = L.Trainer(max_steps=steps, max_epochs=math.ceil(steps / len(loader)),
                        accelerator="gpu" if device.type == "cuda" else "cpu",
                        devices=[device.index or 0] if device.type == "cuda" else 1, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=not quiet)
    log.info("pretraining the explainer on %d images for %d steps", len(dataset), steps)
    with expected_lightning_warnings():
        trainer.fit(module, loader)


def save_explanation(out: Path, stem: str, path: Path, saliency: torch.Tensor, probs: torch.Tensor,
                     explained_class: int, names: list[str], top_k: int, model_name: str) -> dict[str, Any]:
    """One image's map at its own size (.safetensors, .npy) and figure (.png); returns its index record."""
    import torch
    from torch.nn import functional as F

    from ltx.data.folder import load_rgb
    from ltx.report import explanation_figure
    from ltx.store import atomic_write, save_tensors

    image = np.asarray(load_rgb(path), dtype=np.float32) / 255
    height, width = image.shape[:2]
    full = F.interpolate(saliency[None, None].float(), size=(height, width), mode="bilinear",
                         align_corners=False)[0, 0].clamp(0, 1).cpu()
    record = {"image": str(path), "width": width, "height": height, "class": explained_class,
              "class_name": names[explained_class], "probability": float(probs[explained_class]),
              "mask_area": float(full.mean()), "figure": f"{stem}.png", "safetensors": f"{stem}.safetensors",
              "npy": f"{stem}.npy"}
    save_tensors(out / record["safetensors"], {"map": full, "model_input_map": saliency},
                 metadata={"image": str(path), "class": str(explained_class), "model": model_name})

    def write_npy(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, full.numpy())

    atomic_write(out / record["npy"], write_npy)
    values, indices = torch.topk(probs, min(top_k, len(probs)))
    top = [(names[int(i)], float(v)) for v, i in zip(values, indices)]
    explanation_figure(out / record["figure"], image, full.numpy(), f"{path.name} ({width}×{height})", top,
                       names[explained_class])
    return record


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """Output file names: each image's stem, numbered where two images share one."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        count = seen[path.stem] = seen.get(path.stem, 0) + 1
        stems.append(path.stem if count == 1 else f"{path.stem}_{count}")
    return stems


def explain(args: argparse.Namespace) -> list[dict[str, Any]]:
    """`ltx explain`: load or pretrain an explainer, finetune it per image, write maps, figures, index."""
    import lightning as L
    import torch
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader

    from ltx.data.folder import ImageFiles, find_images
    from ltx.lit.explain import ExplainModule
    from ltx.models.zoo import Settings, load_state, read_checkpoint
    from ltx.progress import track
    from ltx.report import explanations_index
    from ltx.stages.pretrain import new_explainer
    from ltx.store import save_tensors, write_json

    out = writable_folder(args.out)
    sources, extra_sources = find_images(args.images), find_images(args.pretrain_images)
    device = resolve_device(args.device)
    cfg = compose_settings(args)
    L.seed_everything(args.seed, verbose=False)
    explained = load_model(args)
    names = class_names(explained, args.labels)
    if args.class_ != "predicted" and args.class_ >= explained.num_classes:
        raise ValueError(f"--class {args.class_} is out of range: {explained.name} has "
                         f"{explained.num_classes} classes (0 to {explained.num_classes - 1}).")
    class_mode, label = ("predicted", -1) if args.class_ == "predicted" else ("target", args.class_)
    paths = usable_images(sources, cell_size(explained), "given")
    dataset = ImageFiles(paths, image_size=explained.image_size, label=label)

    explainer, masking, holder = new_explainer(cfg, explained)
    loss = instantiate(cfg.loss)
    if args.explainer:
        settings = Settings(name="--model (the explained model the explainer was pretrained for)",
                            weights="--explainer RUN_DIR/explainers/BACKBONE/predicted.safetensors")
        load_state(holder, read_checkpoint(args.explainer, settings)[0], args.explainer, settings)
        origin = f"explainer {args.explainer}"
    else:
        extra = usable_images(extra_sources, cell_size(explained), "pretraining") if extra_sources else []
        pretrain_set = ImageFiles(paths + extra, image_size=explained.image_size, label=label)
        pretrain(cfg, explained, explainer, masking, loss, pretrain_set, class_mode=class_mode,
                 steps=args.pretrain_steps, batch_size=args.batch_size, device=device, seed=args.seed,
                 quiet=args.quiet)
        save_tensors(out / "explainer.safetensors", holder.state_dict(), metadata={"model": explained.name})
        origin = (f"explainer pretrained on {len(pretrain_set)} images for {args.pretrain_steps} steps, "
                  f"saved as explainer.safetensors (reuse: --explainer {out / 'explainer.safetensors'})")

    ltx = instantiate(cfg.method.ltx)(model=explained, explainer=explainer, masking=masking, loss=loss)
    module = ExplainModule(ltx, class_mode=class_mode).to(device)
    stems = unique_stems(paths)
    records: list[dict[str, Any]] = []
    loader = DataLoader(dataset, batch_size=args.batch_size)
    for batch in track(loader, f"finetuning {len(dataset)} images, {args.batch_size} at a time",
                       disable=args.quiet or None):
        batch = {k: v.to(device) for k, v in batch.items()}
        result = module.predict_step(batch)
        with torch.no_grad():
            probs = explained(batch["image"]).softmax(-1).cpu()
        for i, index in enumerate(batch["index"].tolist()):
            records.append(save_explanation(out, stems[index], paths[index], result["maps"][i].cpu(),
                                            probs[i], int(result["classes"][i]), names, args.top_k,
                                            explained.name))
    explained_class = "the predicted class" if label < 0 else f"class {label} ({names[label]})"
    header = (f"{explained.name} · explains {explained_class} · {origin} · finetuned {ltx.settings.steps} "
              f"steps per image · {datetime.now():%Y-%m-%d %H:%M}")
    write_json(out / "explanations.json", {"header": header, "images": records})
    explanations_index(out / "index.html", records, header)
    log.info("%d explanations written to %s (open %s)", len(records), out, out / "index.html")
    return records


# --- entry point ---------------------------------------------------------------------------------------

def _configure_logging(quiet: bool) -> None:
    """Show the package's log lines through the progress bars' console (once per process). Records of
    the 'ltx' logger itself are left out: they are `report_user_errors`' copy of the error (for
    Hydra's log file), which it prints itself."""
    from ltx.progress import ConsoleHandler

    logger = logging.getLogger("ltx")
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        handler = ConsoleHandler()
        handler.addFilter(lambda record: record.name != "ltx")
        logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> None:
    from ltx.run import report_user_errors

    args = build_parser().parse_args(argv)
    _configure_logging(args.quiet)
    report_user_errors(args.command)(args)


if __name__ == "__main__":
    main()

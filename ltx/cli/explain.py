"""`ltx explain IMAGES... --model NAME_OR_CHECKPOINT`: LTX explanations of a timm classifier on
your own images. The explainer is loaded (`--explainer`, e.g. a run's
explainers/<backbone>/<mode>.safetensors) or, without one, pretrained on the given images (plus
`--pretrain-images`) for `--pretrain-steps` steps with the run's pretraining module
(`ltx.stages.pretrain`) and saved as explainer.safetensors for the next time; then a copy of it is
finetuned on each image (`ltx.methods.ltx.LTX`, `--steps`), as in the paper. Images of any size
and mode are resized straight to the model's input size; maps are returned at each image's own size.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import fields, replace
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
    from ltx.models.zoo import ModelSpec

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


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


#: the options that set each field of a model's spec (`ltx.models.zoo.ModelSpec`), for the warnings
SPEC_OPTIONS = {"name": "--arch", "image_size": "--image-size", "mean": "--norm/--mean",
                "std": "--norm/--std", "model_kwargs": "--model-arg"}
MODEL_SETTINGS = dict(name="--model / --arch", weights="--model /path/to/model.safetensors --arch NAME",
                      image_size="--image-size N", model_kwargs="--model-arg KEY=VALUE")


def given_spec(args: argparse.Namespace) -> ModelSpec:
    """What the options say of the model: --arch, --image-size, --norm or --mean/--std, --model-arg
    (None where they say nothing); checked before any work."""
    from ltx.models.zoo import NORMALISATIONS, ModelSpec

    mean, std = args.mean, args.std
    if args.norm is not None:
        if args.norm not in NORMALISATIONS:
            raise ValueError(f"unknown --norm {args.norm!r}: choose {', '.join(NORMALISATIONS)}, or give "
                             "--mean and --std.")
        if mean is not None or std is not None:
            raise ValueError("give --norm or --mean/--std, not both.")
        mean, std = NORMALISATIONS[args.norm]
    if (mean is None) != (std is None):
        raise ValueError("--mean and --std go together: give both (or --norm imagenet|inception|none).")
    for option, values in (("--mean", mean), ("--std", std)):
        if values is not None and len(values) not in (1, 3):
            raise ValueError(f"{option} takes 1 value (every channel) or 3 (R G B), got {len(values)}.")
    return ModelSpec(name=args.arch, image_size=args.image_size,
                     mean=None if mean is None else tuple(mean) * (3 // len(mean)),
                     std=None if std is None else tuple(std) * (3 // len(std)),
                     model_kwargs=dict(args.model_args) or None)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(a, b))
    return a == b


def merged_spec(given: ModelSpec, saved: ModelSpec, source: Path) -> ModelSpec:
    """The options where given, else the checkpoint's metadata; an option that contradicts the
    metadata wins, with a one-line warning (model arguments: key by key)."""
    values: dict[str, Any] = {}
    conflicts: list[tuple[str, str]] = []
    for field in fields(given):
        mine, theirs = getattr(given, field.name), getattr(saved, field.name)
        option = SPEC_OPTIONS[field.name]
        if field.name == "model_kwargs":
            mine, theirs = mine or {}, theirs or {}
            values[field.name] = {**theirs, **mine} or None
            conflicts += [(f"{option} {key}={value}", f"{key}={theirs[key]}") for key, value in mine.items()
                          if key in theirs and theirs[key] != value]
        else:
            values[field.name] = theirs if mine is None else mine
            if mine is not None and theirs is not None and not _same(mine, theirs):
                conflicts.append((f"{option} {_shown(mine)}", f"{field.name} {_shown(theirs)}"))
    for option, metadata in conflicts:
        log.warning("%s overrides the checkpoint's metadata (%s, in %s)", option, metadata, source.name)
    return replace(given, **values)


def _shown(value: Any) -> str:
    return " ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else str(value)


def load_model(args: argparse.Namespace) -> ExplainedModel:
    """The explained model: a timm name (hub weights) or a checkpoint, built and fed as its metadata
    (as `ltx.run` writes it) and the options say, else with the architecture's timm defaults (said in
    a warning: a model trained at another size or normalisation would be explained wrongly)."""
    from ltx.models.zoo import (
        Settings,
        check_input_size,
        checkpoint_spec,
        create_network,
        default_image_size,
        wrap,
    )

    settings = Settings(**MODEL_SETTINGS)
    path = Path(args.model).expanduser()
    given = given_spec(args)
    checkpoint = path.suffix in CHECKPOINT_SUFFIXES or path.is_file()
    spec = (merged_spec(given, checkpoint_spec(path, settings), path) if checkpoint
            else replace(given, name=args.model))
    if not spec.name:
        raise ValueError(f"checkpoint {path} does not name its architecture: add --arch NAME (a timm "
                         "model name, e.g. resnet50).")
    network = create_network(spec.name, num_classes=args.num_classes,
                             weights=str(path) if checkpoint else "hub", settings=settings,
                             **(spec.model_kwargs or {}))
    image_size = spec.image_size or default_image_size(network)
    check_input_size(network, image_size, settings)
    explained = wrap(network, name=spec.name, image_size=image_size, mean=spec.mean, std=spec.std)
    if checkpoint and None in (spec.image_size, spec.mean):
        mean, std = (_shown(tuple(stat.flatten().tolist())) for stat in (explained.mean, explained.std))
        log.warning("%s does not say how the model was trained: explaining %d px inputs normalised with mean "
                    "%s, std %s (timm's defaults for %s); if it was trained otherwise, give --image-size and "
                    "--norm (or --mean/--std)", path.name, image_size, mean, std, spec.name)
    return explained


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
                     explained_class: int, names: list[str], top_k: int, model_name: str,
                     degenerate: str | None, flag: str | None) -> dict[str, Any]:
    """One image's map at its own size (.safetensors, .npy) and figure (.png); returns its index record.
    `degenerate`: the kind of degenerate mask it is (`ltx.methods.ltx.degenerate_masks`), flagged on the
    figure with `flag`."""
    import torch
    from torch.nn import functional as F

    from ltx.data.folder import load_rgb
    from ltx.figures import explanation_figure
    from ltx.store import atomic_write, save_tensors

    image = np.asarray(load_rgb(path), dtype=np.float32) / 255
    height, width = image.shape[:2]
    full = F.interpolate(saliency[None, None].float(), size=(height, width), mode="bilinear",
                         align_corners=False)[0, 0].clamp(0, 1).cpu()
    record = {"image": str(path), "width": width, "height": height, "class": explained_class,
              "class_name": names[explained_class], "probability": float(probs[explained_class]),
              "mask_area": float(full.mean()), "degenerate": degenerate, "figure": f"{stem}.png",
              "safetensors": f"{stem}.safetensors", "npy": f"{stem}.npy"}
    save_tensors(out / record["safetensors"], {"map": full, "model_input_map": saliency},
                 metadata={"image": str(path), "class": str(explained_class), "model": model_name})

    def write_npy(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, full.numpy())

    atomic_write(out / record["npy"], write_npy)
    values, indices = torch.topk(probs, min(top_k, len(probs)))
    top = [(names[int(i)], float(v)) for v, i in zip(values, indices)]
    explanation_figure(out / record["figure"], image, full.numpy(), f"{path.name} ({width}×{height})", top,
                       names[explained_class], flag=flag)
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
    from ltx.methods.ltx import degeneracy_flag, degeneracy_warning, degenerate_masks
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
    fixes = {"mask_weight": f"--mask-weight (now {cfg.loss.mask_weight:g})",
             "pretrain": "--pretrain-steps instead of --explainer" if args.explainer else
             f"--pretrain-steps, now {args.pretrain_steps}", "masking": "--set masking=blur or mean"}
    loader = DataLoader(dataset, batch_size=args.batch_size)
    for batch in track(loader, f"finetuning {len(dataset)} images, {args.batch_size} at a time",
                       disable=args.quiet or None):
        batch = {k: v.to(device) for k, v in batch.items()}
        result = module.predict_step(batch)
        with torch.no_grad():
            probs = explained(batch["image"]).softmax(-1).cpu()
            hidden = explained(masking.baseline(batch["image"])).argmax(-1).cpu()  # the whole image masked
        for i, (index, kind) in enumerate(zip(batch["index"].tolist(), degenerate_masks(result["maps"]))):
            records.append(save_explanation(out, stems[index], paths[index], result["maps"][i].cpu(),
                                            probs[i], int(result["classes"][i]), names, args.top_k,
                                            explained.name, kind, kind and degeneracy_flag(kind, fixes)))
            records[-1]["fully_masked_class"] = int(hidden[i])
    warning = degeneracy_warning([r["degenerate"] for r in records], fixes,
                                 [r["fully_masked_class"] == r["class"] for r in records])
    if warning:
        log.warning(warning)
    explained_class = "the predicted class" if label < 0 else f"class {label} ({names[label]})"
    header = (f"{explained.name} · explains {explained_class} · {origin} · finetuned {ltx.settings.steps} "
              f"steps per image · {datetime.now():%Y-%m-%d %H:%M}")
    write_json(out / "explanations.json", {"header": header, "degenerate": warning, "images": records})
    explanations_index(out / "index.html", records, header)
    log.info("%d explanations written to %s (open %s)", len(records), out, out / "index.html")
    return records

"""Sanity checks (Adebayo et al., NeurIPS 2018) of a finished run's methods, `python -m ltx.sanity`.

They recompute maps on changed models, so they are no evaluation suite over saved maps:

- model randomisation: the black box's layer groups (`randomisation_order`: top-level blocks from
  the output down) are re-initialised, cascading from the top (depth k: the k top groups) and one
  at a time (independent), and each method's maps on the randomised model are compared with its
  maps on the original one (Spearman rank correlation and SSIM per image, mean over images). A map
  that explains the model changes; an edge detector's does not.
- class sensitivity: the maps of the top-1 class against those of the lowest-scoring class (or a
  given one); a method blind to the class scores 1.

A check passes when the mean Spearman correlation (at full cascading randomisation, or between
the two classes) is below `sanity.threshold` (0.5). The class explained is the original model's
top-1 at every depth. The oracle and random maps do not depend on the model and are left out, as
is any map selected with an evaluation metric (`ltx_sel`).

LTX explains the model it was pretrained on, so at each depth its explainer is pretrained anew on
the randomised model at a reduced budget (`sanity.ltx_pretrain_steps` steps on
`sanity.ltx_pretrain_images` training images; the reference at depth 0 is pretrained the same way
on the original model, so budget and randomisation are not confounded), then finetuned with the
run's settings, at the depths `sanity.ltx_depths` of the cascading check only (cost). The budget
is in the log, the printed table and every LTX row of sanity.csv (`setting`). The class check uses
the run's own explainers (`explainers/<backbone>/predicted.safetensors`).
"""

from __future__ import annotations

import copy
import csv
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure
from torchmetrics.functional.regression import spearman_corrcoef

from ltx.data import seeded_subset
from ltx.masking import Masking
from ltx.methods.base import Method
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer
from ltx.stages.blackbox import ensure_blackbox
from ltx.stages.explain import build_method, run_methods, unranked
from ltx.stages.pretrain import new_explainer, pretrain_explainer
from ltx.store import atomic_write

log = logging.getLogger(__name__)

CHECKS = ("cascading", "independent", "class")
COLUMNS = ["backbone", "method", "check", "depth", "layer", "spearman", "ssim", "n_images", "setting"]


# --- randomising the black box ----------------------------------------------------------------------

def _network(model: nn.Module) -> nn.Module:
    return model.model if isinstance(model, ExplainedModel) else model


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def randomisation_order(model: nn.Module) -> list[str]:
    """The black box's layer groups from the output down (the order of cascading randomisation).

    Model-agnostic: the network's top-level children with parameters, in registration order (the
    forward order in timm), reversed. A single stack of blocks (ViT's `blocks`) is expanded one
    level, since it is the whole trunk; several stacks (ResNet's `layer1`…`layer4`) are the stages
    and stay whole. The network's own parameters (ViT's `cls_token`, `pos_embed`) form one group
    above the first child, as they enter the forward just after it. timm ViT: head, norm,
    blocks.N-1 … blocks.0, cls_token+pos_embed, patch_embed; timm ResNet: fc, layer4 … layer1,
    bn1, conv1."""
    net = _network(model)
    children = [(name, child) for name, child in net.named_children() if _has_parameters(child)]
    stacks = [name for name, child in children if isinstance(child, nn.Sequential | nn.ModuleList)]
    groups: list[str] = []
    for name, child in children:
        if stacks == [name]:
            groups += [f"{name}.{sub}" for sub, block in child.named_children() if _has_parameters(block)]
        else:
            groups.append(name)
    own = [name for name, _ in net.named_parameters(recurse=False)]
    if own:
        groups.insert(min(1, len(groups)), "+".join(own))
    return groups[::-1]


@torch.no_grad()
def reinitialise(model: nn.Module, group: str, seed: int) -> None:
    """Re-initialise one group of `randomisation_order` in place, from `seed`: each submodule's
    `reset_parameters` (BatchNorm's also resets its running statistics); the network's own
    parameters (a group `a+b`) from N(0, 0.02²), as timm initialises position embeddings."""
    net = _network(model)
    own = dict(net.named_parameters(recurse=False))
    torch.manual_seed(seed)
    if all(name in own for name in group.split("+")):
        for name in group.split("+"):
            own[name].normal_(0.0, 0.02)
        return
    for module in net.get_submodule(group).modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


def randomised(model: ExplainedModel, groups: list[str], seed: int) -> ExplainedModel:
    """A copy of `model` with `groups` re-initialised. Group i of the order always gets seed + i, so
    a layer has the same random weights in the cascading and the independent check."""
    order = randomisation_order(model)
    copied = copy.deepcopy(model)
    for group in groups:
        reinitialise(copied, group, seed + order.index(group))
    return copied


def randomisations(model: ExplainedModel, check: str, seed: int,
                    depths: set[int] | None = None) -> Iterator[tuple[int, str, ExplainedModel]]:
    """(depth, layer group, randomised model) of a check at `depths` (all by default): cascading depth
    k re-initialises the k top groups, independent depth k the k-th alone. Depth 0, the original
    model, is the reference; models are made one at a time (memory)."""
    order = randomisation_order(model)
    for depth, group in enumerate(order, start=1):
        if depths is not None and depth not in depths:
            continue
        chosen = order[:depth] if check == "cascading" else [group]
        yield depth, group, randomised(model, chosen, seed)


# --- comparing maps ---------------------------------------------------------------------------------

def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map rescaled to [0, 1] (a constant map to zeros), so SSIM compares shapes, not scales."""
    flat = maps.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(maps)


def map_similarity(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (B,): the Spearman rank correlation of the flattened maps `a`, `b` (B, H, W) and
    their SSIM (each map rescaled to [0, 1]). A constant map ranks nothing: its correlation is 1
    with an identical map and 0 with any other (torchmetrics gives NaN there)."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    rho = spearman_corrcoef(a.flatten(1).T, b.flatten(1).T).reshape(-1)
    undefined = (a.flatten(1).std(1) == 0) | (b.flatten(1).std(1) == 0) | ~torch.isfinite(rho)
    same = (a == b).flatten(1).all(1)
    rho = torch.where(undefined, same.float(), rho)
    ssim = structural_similarity_index_measure(_unit_range(a)[:, None], _unit_range(b)[:, None], data_range=1.0,
                                               reduction="none")
    return rho, ssim.reshape(-1)


@dataclass
class SanityRow:
    """One line of sanity.csv: a method's maps at one depth (or the other class) against the reference."""

    backbone: str
    method: str
    check: str
    depth: int
    layer: str
    spearman: float
    ssim: float
    n_images: int
    setting: str = ""


def mean_similarity(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """`map_similarity`'s Spearman and SSIM, each the mean over images."""
    rho, ssim = map_similarity(a, b)
    return float(rho.mean()), float(ssim.mean())


# --- the methods -------------------------------------------------------------------------------------

class MethodMaker:
    """Builds a run's method on any (randomised) model and computes its maps in batches. A method on
    a pretrained explainer (LTX) gets, for a model named by `key`, an explainer pretrained on that
    model at the reduced budget (shared by the LTX variants through `explainers`); with no key, the
    run's own explainer of the original model."""

    def __init__(self, cfg: DictConfig, run_dir: Path, name: str, method_cfg: DictConfig, datamodule: Any,
                 backbone: str, sanity: DictConfig, explainers: dict[str, tuple[Explainer, Masking]]) -> None:
        self.cfg, self.run_dir, self.name, self.method_cfg = cfg, run_dir, name, method_cfg
        self.datamodule, self.backbone, self.sanity, self.explainers = datamodule, backbone, sanity, explainers
        self.uses_explainer = get_class(method_cfg._target_).uses_explainer

    @property
    def setting(self) -> str:
        """The reduced budget of an LTX method, as sanity.csv records it."""
        if not self.uses_explainer:
            return ""
        knobs = " ".join(f"{k}={v}" for k, v in self.method_cfg.items() if k in ("steps", "lr", "select_by"))
        return (f"explainer pretrained {self.sanity.ltx_pretrain_steps} steps on {self.sanity.ltx_pretrain_images} "
                f"train images per depth; finetuned {knobs}")

    def explainer(self, model: ExplainedModel, key: str | None) -> tuple[Explainer, Masking]:
        """The explainer for `model`: the run's own (no key), or pretrained anew at the reduced budget."""
        if key is None:
            return pretrain_explainer(self.cfg, self.run_dir, self.backbone, model, self.datamodule, "predicted")
        if key not in self.explainers:
            from ltx.cli.explain import pretrain

            explainer, masking, _ = new_explainer(self.cfg, model)
            train = seeded_subset(self.datamodule.train_set, num_samples=int(self.sanity.ltx_pretrain_images),
                                  seed=self.cfg.seed)
            log.info("sanity %s: pretraining an explainer on the %s model", self.backbone, key)
            pretrain(self.cfg, model, explainer, masking, instantiate(self.cfg.loss), train, class_mode="predicted",
                     steps=int(self.sanity.ltx_pretrain_steps), batch_size=self.cfg.pretrain.batch_size,
                     device=torch.device("cpu"), seed=self.cfg.seed, quiet=True)
            self.explainers[key] = (explainer, masking)
        return self.explainers[key]

    def build(self, model: ExplainedModel, key: str | None = None) -> Method:
        explainer, masking = self.explainer(model, key) if self.uses_explainer else (None, None)
        return build_method(self.method_cfg, model, copy.deepcopy(explainer), masking, self.cfg.loss)

    def maps(self, model: ExplainedModel, images: torch.Tensor, classes: torch.Tensor, key: str | None = None
             ) -> torch.Tensor:
        method = self.build(model, key)
        size = int(self.sanity.batch_size)
        torch.manual_seed(int(self.sanity.seed))  # stochastic methods alike at every depth
        return torch.cat([method(images[i:i + size], classes[i:i + size]).detach().cpu()
                          for i in range(0, len(images), size)])


def sanity_methods(cfg: DictConfig, chosen: list[str] | None) -> dict[str, DictConfig]:
    """The run's methods the checks apply to: all but those whose maps do not depend on the model
    (random, the oracle) and those selected with an evaluation metric (`unranked`: `ltx_sel`), or
    the `chosen` ones (which must be the run's)."""
    methods = run_methods(cfg)
    if chosen is not None:
        unknown = [name for name in chosen if name not in methods]
        if unknown:
            raise ValueError(f"sanity.methods: {unknown} are not methods of this run (it has {', '.join(methods)})")
        return {name: methods[name] for name in chosen}
    skipped = unranked(cfg)
    return {name: conf for name, conf in methods.items()
            if name not in skipped and not get_class(conf._target_).model_independent}


def ltx_depths(sanity: DictConfig, num_groups: int) -> set[int]:
    """The cascading depths at which LTX is rerun (negative: counted back from full randomisation, -1)."""
    depths = set()
    for depth in map(int, sanity.ltx_depths):
        if depth == 0 or not -num_groups <= depth <= num_groups:
            raise ValueError(f"sanity.ltx_depths: {depth} is not a depth of 1..{num_groups} (or -1 for the last)")
        depths.add(depth if depth > 0 else num_groups + 1 + depth)
    return depths


# --- the checks of one backbone ------------------------------------------------------------------

def other_classes(model: ExplainedModel, images: torch.Tensor, other: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-1 classes and the classes they are contrasted with: the lowest-scoring, or `other`."""
    with torch.no_grad():
        logits = model(images)
    top = logits.argmax(1)
    if other == "lowest":
        return top, logits.argmin(1)
    if not isinstance(other, int) or not 0 <= other < logits.shape[1]:
        raise ValueError(f"sanity.other_class={other!r}: use 'lowest' or a class of 0..{logits.shape[1] - 1}")
    return top, torch.full_like(top, other)


def model_check(maps: Callable[[ExplainedModel, str], torch.Tensor], model: ExplainedModel, check: str, seed: int,
                depths: set[int] | None = None) -> list[tuple[int, str, float, float]]:
    """(depth, layer group, Spearman, SSIM) of the maps `maps(model, key)` gives on each randomised
    model against those on the original (key "original", depth 0 first); `key` names the model
    ("cascading depth 3") for a method that prepares per model (LTX's explainer)."""
    reference = maps(model, "original")
    results = [(0, "original", 1.0, 1.0)]
    for depth, group, changed in randomisations(model, check, seed, depths):
        results.append((depth, group, *mean_similarity(maps(changed, f"{check} depth {depth}"), reference)))
    return results


def class_check(maps: Callable[[torch.Tensor], torch.Tensor], classes: torch.Tensor,
                contrast: torch.Tensor) -> tuple[float, float]:
    """Spearman and SSIM of the maps `maps(classes)` of the top-1 classes against the contrasted ones."""
    return mean_similarity(maps(contrast), maps(classes))


def check_backbone(cfg: DictConfig, run_dir: Path, backbone: str, model: ExplainedModel, datamodule: Any,
                   images: torch.Tensor, sanity: DictConfig) -> list[SanityRow]:
    """Every check of `sanity.checks` for every method on one black box."""
    unknown = [check for check in sanity.checks if check not in CHECKS]
    if unknown:
        raise ValueError(f"sanity.checks: unknown {unknown}; choose among {', '.join(CHECKS)}")
    rows: list[SanityRow] = []
    classes, contrast = other_classes(model, images, sanity.other_class)
    order, explainers = randomisation_order(model), {}
    for name, method_cfg in sanity_methods(cfg, sanity.methods).items():
        maker = MethodMaker(cfg, run_dir, name, method_cfg, datamodule, backbone, sanity, explainers)
        if not get_class(method_cfg._target_).applies_to(model):
            log.info("sanity %s/%s: skipped (not applicable to a %s)", backbone, name, model.family)
            continue
        row = {"backbone": backbone, "method": name, "n_images": len(images), "setting": maker.setting}
        if "class" in sanity.checks:
            rho, ssim = class_check(lambda wanted, m=maker: m.maps(model, images, wanted), classes, contrast)
            rows.append(SanityRow(**{**row, "setting": "the run's explainer" if maker.uses_explainer else ""},
                                  check="class", depth=0, layer=f"top-1 vs {sanity.other_class}", spearman=rho,
                                  ssim=ssim))
        checks = [c for c in ("cascading", "independent") if c in sanity.checks]
        depths = set(range(1, len(order) + 1))
        if maker.uses_explainer:  # an explainer pretrained per depth: a few cascading depths only
            checks, depths = [c for c in checks if c == "cascading"], ltx_depths(sanity, len(order))
        if checks:
            log.info("sanity %s/%s: %s randomisation, depths %s of %d layer groups%s", backbone, name,
                     " and ".join(checks), sorted(depths), len(order), f" ({maker.setting})" if maker.setting else "")
        for check in checks:
            results = model_check(lambda changed, key, m=maker: m.maps(changed, images, classes, key), model, check,
                                  int(sanity.seed), depths)
            rows += [SanityRow(**row, check=check, depth=depth, layer=layer, spearman=rho, ssim=ssim)
                     for depth, layer, rho, ssim in results]
    return rows


# --- verdicts, files --------------------------------------------------------------------------------

def verdicts(rows: list[SanityRow], threshold: float) -> list[dict[str, Any]]:
    """Per backbone and method: Spearman at the top layer and at full cascading randomisation, and
    between classes, with pass/fail (correlation below `threshold`)."""
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        entry = table.setdefault((r.backbone, r.method), {"backbone": r.backbone, "method": r.method})
        if r.check == "cascading" and r.depth > 0:
            entry.setdefault("top layer ρ", r.spearman)
            entry["fully randomised ρ"], entry["SSIM"] = r.spearman, r.ssim
            entry["model check"] = "pass" if r.spearman < threshold else "FAIL"
        elif r.check == "class":
            entry["class ρ"] = r.spearman
            entry["class check"] = "pass" if r.spearman < threshold else "FAIL"
    return list(table.values())


def format_table(entries: list[dict[str, Any]]) -> str:
    """The verdicts as a markdown table (printed, and pasted into experiments/README.md)."""
    columns = ["backbone", "method", "top layer ρ", "fully randomised ρ", "SSIM", "model check", "class ρ",
               "class check"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for entry in entries:
        cells = [f"{entry[c]:.2f}" if isinstance(entry.get(c), float) else str(entry.get(c, "–")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_rows(path: Path, rows: list[SanityRow]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(asdict(r) for r in rows)

    atomic_write(path, write)


def run_sanity(run_dir: str | Path, sanity: DictConfig) -> list[SanityRow]:
    """The checks on every black box of a finished run: sanity.csv, sanity_<backbone>.png, a table."""
    from ltx.figures import sanity_plot
    from ltx.pipeline import prepare_data

    run_dir = Path(run_dir)
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise FileNotFoundError(f"no run config at {saved}: run_dir must be the output directory of `ltx.run`")
    if int(sanity.num_images) < 1 or int(sanity.batch_size) < 1:
        raise ValueError("sanity.num_images and sanity.batch_size must be at least 1")
    cfg = OmegaConf.load(saved)
    cfg.paths.output_dir = str(run_dir)
    cfg.explain.num_images = int(sanity.num_images)
    datamodule, instances = prepare_data(cfg)
    images = torch.stack([instances[i]["image"] for i in range(len(instances))])
    rows: list[SanityRow] = []
    for backbone, spec in cfg.backbone.items():
        model = ensure_blackbox(cfg, backbone, spec, datamodule)
        mine = check_backbone(cfg, run_dir, backbone, model, datamodule, images, sanity)
        rows += mine
        write_rows(run_dir / "sanity.csv", rows)
        sanity_plot(run_dir / f"sanity_{backbone}.png", [asdict(r) for r in mine], backbone, float(sanity.threshold))
    table = format_table(verdicts(rows, float(sanity.threshold)))
    budgets = sorted({r.setting for r in rows if r.setting and r.check != "class"})
    log.info("sanity checks on %d images (pass: Spearman ρ < %s at full cascading randomisation / between "
             "classes)%s\n%s\nwritten to %s", len(images), sanity.threshold,
             "".join(f"\nLTX budget: {b}" for b in budgets), table, run_dir / "sanity.csv")
    return rows


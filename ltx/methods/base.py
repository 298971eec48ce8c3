"""One interface for every explanation method: `method(images, classes) -> maps`.

Like Captum's `attribute(inputs, target)`: `images` are (B, 3, H, W) in [0, 1], `classes` a (B,)
tensor of the class to explain per image, and the result a (B, H, W) saliency map at image size
(any scale: the metrics only rank it). Methods are registered by name so the CLI and the configs
can find them; a method that needs a model's internals declares the families it supports and
refuses others with a clear error. What a run's adapter (`ltx.lit.explain.ExplainModule`) needs
to know of a method, it declares, the same for every method:

- `needs`: batch entries besides the images it takes as keyword arguments of `explain` (the
  ground-truth masks, for the oracle).
- `contrastive`: it explains a pair (c, c′) too (`classes` (B, 2), a contrastive class mode,
  `ltx.classes`), by attributing `class_score` (logit_c − logit_c′) or scoring `class_probability`.
  Others refuse pairs with `MethodNotApplicable` rather than explain c alone, so a run skips them.
- `explain` may return, beside the maps, per-instance extras as a dict (LTX: `failed`, `step`,
  `loss`); they are saved with the maps and evaluation reads them. `explanations` always gives
  that dict, `method(images, classes)` the maps alone.
- `reuse_across_class_modes`: whether a map saved for one class mode may stand for the other
  mode's where the class explained is the same (a map that depends only on the image and the
  class). LTX: never, it has one explainer per class mode.
- `uses_explainer`: the method is built with the run's pretrained `explainer`, its `masking` and
  `loss` besides the model (LTX).
- `model_independent`: the map does not depend on the explained model (random, the oracle): the
  sanity checks (`ltx.sanity`), which recompute maps on randomised models, leave it out.
- `networks()`: the modules it computes with, which the adapter moves between devices.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar, TypeVar

import torch
from torch import nn

from ltx.classes import is_contrastive
from ltx.models.explained import ExplainedModel

METHODS: dict[str, type[Method]] = {}

M = TypeVar("M", bound="type[Method]")


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: make a method available by `name` (configs, CLI)."""

    def wrap(cls: M) -> M:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice ({METHODS[name]} and {cls})")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


class MethodNotApplicable(ValueError):
    """The method needs internals (attention, conv layers) this explained model does not have."""


class Method(ABC):
    """A saliency method bound to one explained model."""

    name: ClassVar[str] = "method"
    #: model families ('vit', 'cnn') the method supports; None = any model (black-box methods)
    families: ClassVar[tuple[str, ...] | None] = None
    #: batch entries besides images and classes that `explain` takes as keyword arguments (e.g. "mask")
    needs: ClassVar[tuple[str, ...]] = ()
    #: a map saved for one class mode may be reused for the other where the class is the same
    reuse_across_class_modes: ClassVar[bool] = True
    #: built with the run's pretrained explainer, masking and loss (keyword arguments) besides the model
    uses_explainer: ClassVar[bool] = False
    #: explains pairs (c, c′) as well as classes (`ltx.classes`); False: refused in contrastive class modes
    contrastive: ClassVar[bool] = False
    #: the map does not depend on the model (random, oracle): left out of the sanity checks
    model_independent: ClassVar[bool] = False
    #: called with the units of `work` done as they are done, set by whoever shows the progress
    progress: Callable[[int], None] | None = None

    def __init__(self, model: ExplainedModel) -> None:
        self.check_applicable(model)
        self.model = model

    @classmethod
    def applies_to(cls, model: ExplainedModel) -> bool:
        return cls.families is None or model.family in cls.families

    @classmethod
    def check_applicable(cls, model: ExplainedModel) -> None:
        if not cls.applies_to(model):
            raise MethodNotApplicable(
                f"method {cls.name!r} needs a {' or '.join(cls.families or ())} model, but "
                f"{model.name!r} is a {model.family}: choose another method for it."
            )

    @classmethod
    def check_class_mode(cls, class_mode: str) -> None:
        """MethodNotApplicable for a contrastive class mode if the method explains one class only."""
        if is_contrastive(class_mode) and not cls.contrastive:
            raise MethodNotApplicable(f"method {cls.name!r} explains a class, not a class against another: "
                                      f"class mode {class_mode!r} needs a contrastive method.")

    def work(self, num_images: int) -> int | None:
        """Units of work for `num_images` images, for a progress bar finer than batches (LTX: its
        finetuning steps, one batch of images taking minutes); None: a batch is the unit."""
        return None

    def networks(self) -> list[nn.Module]:
        """The modules the method computes with, for a wrapper to move between devices (Lightning)."""
        return [self.model]

    @abstractmethod
    def explain(self, images: torch.Tensor, classes: torch.Tensor,
                **batch: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Saliency maps (B, H, W) for `classes` (B,) or pairs (B, 2) (`contrastive` methods) on
        `images` (B, 3, H, W) in [0, 1], or a dict of
        them (`maps`) and per-instance extras (B, ...); `batch` holds the entries named in `needs`."""

    def explanations(self, images: torch.Tensor, classes: torch.Tensor, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """`explain`'s result as a dict: `maps` (B, H, W) and the method's per-instance extras."""
        if classes.dim() == 2:
            self.check_class_mode("contrastive")
        missing = [key for key in self.needs if batch.get(key) is None]
        if missing:
            raise ValueError(f"method {self.name!r} needs the batch entries {missing} (the data has none?): "
                             f"choose data with them or another method.")
        out = self.explain(images, classes, **{key: batch[key] for key in self.needs})
        out = out if isinstance(out, dict) else {"maps": out}
        expected = (images.shape[0], *images.shape[-2:])
        if tuple(out["maps"].shape) != expected:
            raise RuntimeError(f"{self.name} returned maps of shape {tuple(out['maps'].shape)}, expected {expected}")
        return out

    def __call__(self, images: torch.Tensor, classes: torch.Tensor, **batch: torch.Tensor) -> torch.Tensor:
        """The maps (B, H, W) alone."""
        return self.explanations(images, classes, **batch)["maps"]


@contextmanager
def autograd_enabled() -> Iterator[None]:
    """Gradient methods need autograd even when called from an evaluation loop under `no_grad` or
    `inference_mode`; inputs must be cloned inside this context to leave inference mode."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def create_method(name: str, model: ExplainedModel, **kwargs) -> Method:
    """Build a registered method by name; unknown names list the valid ones."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown method {name!r}.{hint} Valid methods: {', '.join(sorted(METHODS))}.")
    return METHODS[name](model, **kwargs)

"""What is tuned per instance (`scope`), and how the instance batch runs:

- `all` (the paper): every trainable explainer parameter. Layers with per-instance weights run as
  batched matmuls (ViT) or grouped convolutions (CNN), written directly (`ltx.finetune.stacked`;
  vmap where a layer is not covered).
- `head`: the ViT head / CNN decoder only. The trunk is frozen and the images never change, so its
  features are computed *once* per image, in one ordinary batched pass, and only the head runs per
  step (vmapped over the instances' head weights).
- `lora`: low-rank adapters (`ltx.models.lora`) on every trainable Linear / Conv2d, rank
  `lora_rank`; nothing else. The frozen weights are shared by all instances, so the base layers run
  as ordinary batched ops and only the small adapters are per instance.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import torch
from torch import nn
from torch.func import functional_call, vmap

from ltx.finetune.stacked import broadcast_names, stack
from ltx.losses import LTXLoss
from ltx.masking import Masking
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer, Masks
from ltx.models.lora import add_lora, lora_parameters

#: (tuned, shared, inputs, images, classes) → (masks, per-instance loss terms)
StepFunction = Callable[..., tuple[Masks, dict[str, torch.Tensor]]]


class _FromFeatures(nn.Module):
    """The explainer after its trunk, for scope=head (parameter names as in the explainer, prefixed)."""

    def __init__(self, explainer: Explainer) -> None:
        super().__init__()
        self.explainer = explainer

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> Masks:
        return self.explainer.decode(features, size)


class Plan:
    """The module a finetuning call runs via `functional_call`, built once per explainer and scope: the
    explainer itself, its adapted copy (lora: it shares every tensor with the explainer) or its
    part after the trunk (head, when `from_features`: the trunk's features are computed once).
    Instance batches run its `stacked` copy (per-instance weights as batched kernels) or, when
    `stacked_layers` is False or a tuned layer is not covered, vmap over it."""

    def __init__(self, explainer: Explainer, scope: str, lora_rank: int, lora_alpha: float, *,
                 from_features: bool = True, stacked_layers: bool = True) -> None:
        self.explainer, self.scope = explainer, scope
        self.from_features = scope == "head" and from_features
        self.stacked_layers = stacked_layers
        if scope == "lora":
            self.model: nn.Module = add_lora(explainer, lora_rank, lora_alpha, seed=0)
        elif self.from_features:
            self.model = _FromFeatures(explainer)
        else:
            self.model = explainer

    def is_tuned(self, name: str, param: nn.Parameter) -> bool:
        """Whether the explainer's own parameter `name` is finetuned per instance (lora: none are)."""
        if not param.requires_grad or self.scope == "lora":
            return False
        return self.scope == "all" or not name.startswith("trunk.")

    def tensors(self, device: torch.device) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(tuned, shared): the per-instance tensors (name → one instance's starting value) and the
        frozen ones all instances share, named as `model` expects them."""
        params = dict(self.explainer.named_parameters())
        named = {n: p.detach() for n, p in params.items()}
        buffers = {n: b.detach() for n, b in self.explainer.named_buffers()}
        if self.scope == "lora":
            tuned = {n: p.detach().to(device) for n, p in lora_parameters(self.model).items()}
            return tuned, {**named, **buffers}
        tuned = {n: named[n] for n, p in params.items() if self.is_tuned(n, p)}
        shared = {**{n: t for n, t in named.items() if n not in tuned}, **buffers}
        if self.from_features:
            return self._prefixed(tuned), self._prefixed(shared)
        return tuned, shared

    def tuned_names(self) -> set[str]:
        """The names (as `model` expects them) of the per-instance tensors."""
        if self.scope == "lora":
            return set(lora_parameters(self.model))
        names = {n for n, p in self.explainer.named_parameters() if self.is_tuned(n, p)}
        return set(self._prefixed(dict.fromkeys(names))) if self.from_features else names

    @cached_property
    def stacked(self) -> tuple[nn.Module, set[str]] | None:
        """`model` with per-instance layers (`ltx.finetune.stacked.stack`) and the tuned names that
        are batch broadcasts; None (vmap) when switched off or not every tuned layer is covered."""
        if not self.stacked_layers:
            return None
        tuned = self.tuned_names()
        model = stack(self.model, tuned)
        return None if model is None else (model, broadcast_names(self.model, tuned))

    @staticmethod
    def _prefixed(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"explainer.{n}": t for n, t in tensors.items()}

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """What `model` takes: the images, or (from_features) the frozen trunk's features, once per
        image, as `Explainer.forward` computes them."""
        if not self.from_features:
            return images
        with torch.no_grad():
            return self.explainer.features(images)

    def step_function(self, explained: ExplainedModel, masking: Masking, loss: LTXLoss, batch: int,
                      size: tuple[int, int]) -> StepFunction:
        """One step's forward and loss for an instance batch of `batch` copies on images of `size`."""
        model, stacked = self.model, self.stacked
        extra = (size,) if self.from_features else ()

        def forward(tuned: dict, shared: dict, inputs: torch.Tensor) -> Masks:
            if batch == 1:  # one copy, run plainly: the paper's loop (its layers' plain paths)
                plain = model if stacked is None else stacked[0]
                return functional_call(plain, {**{n: p[0] for n, p in tuned.items()}, **shared}, (inputs, *extra))
            if stacked is not None:  # (B, 1, ...) broadcasts become (B, ...): instance b's on image b
                layers, broadcast = stacked
                params = {n: p.flatten(0, 1) if n in broadcast else p for n, p in tuned.items()}
                return functional_call(layers, {**params, **shared}, (inputs, *extra))

            def one(params: dict, x: torch.Tensor) -> Masks:
                return functional_call(model, {**params, **shared}, (x[None], *extra))

            out = vmap(one, in_dims=(0, 0))(tuned, inputs)
            return Masks(out.mask[:, 0], out.coarse[:, 0])

        def step(tuned: dict, shared: dict, inputs: torch.Tensor, images: torch.Tensor,
                 classes: torch.Tensor) -> tuple[Masks, dict[str, torch.Tensor]]:
            masks = forward(tuned, shared, inputs)
            return masks, loss(explained, masking, images, masks, classes)

        return step

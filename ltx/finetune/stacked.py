"""Per-instance weights without vmap: the layers of an instance batch, written as batched kernels.

Finetuning B copies of the explainer on B images means B sets of weights, one image each. vmap
does this generically (its batching rules stack, copy and regroup for every op); here each layer
type that owns a finetuned weight runs it as the batched kernel that vmap would have to find:

- `Linear`: one `baddbmm` over the instances ((B, tokens, in) × (B, in, out));
- `Conv2d`: one grouped convolution with B groups (1×1 convolutions: one `bmm`);
- `LayerNorm`, eval-mode `BatchNorm2d`: the normalisation without affine, then each instance's
  scale and shift;
- parameters with a leading dimension of 1 used by broadcasting over the batch (a ViT's
  `pos_embed`, `cls_token`): that dimension becomes the instance dimension.

Layers without a finetuned weight (the frozen parts, activations, attention's own matmuls) run
unchanged: their batch *is* the instance batch. Attention runs timm's fused kernel (SDPA), which the
explainer switches off for vmap, which cannot batch it. `stack(module)` returns a copy of the module
(sharing every tensor) with those layers swapped, or None when a finetuned parameter lives in a
layer it does not know (or a BatchNorm normalises with batch statistics, which would mix
instances): the engine then falls back to vmap. The maths is the one-by-one forward's (float64:
equal to rounding, tested); each swapped layer takes its weights stacked (B, ...) or, when they
are shared, as usual.
"""

from __future__ import annotations

import copy

import torch
from timm import layers as timm_layers
from timm.layers import use_fused_attn
from torch import nn
from torch.nn import functional as F


class PerInstanceLinear:
    """A `Linear`'s forward (mixed in before it: `STACKED`) for `weight` (B, out, in) and `bias`
    (B, out): instance b's weights on input b (B, ..., in), one `baddbmm`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dim() == 2:
            return super().forward(x)
        batch, shape = x.shape[0], x.shape[1:-1]
        flat = x.reshape(batch, -1, x.shape[-1])
        weight = self.weight.transpose(1, 2)
        if self.bias is None:
            out = torch.bmm(flat, weight)
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), flat, weight)
        return out.reshape(batch, *shape, out.shape[-1])


class PerInstanceConv2d:
    """A `Conv2d`'s forward for `weight` (B, out, in/groups, kh, kw): one grouped convolution over
    the instances (B · groups groups); a 1×1 convolution without padding as one `bmm`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dim() == 4:
            return super().forward(x)
        batch, channels = x.shape[:2]
        out_channels = self.weight.shape[1]
        if self.kernel_size == (1, 1) and self.padding in ((0, 0), "valid") and self.groups == 1 \
                and self.padding_mode == "zeros":
            x = x[:, :, ::self.stride[0], ::self.stride[1]]
            height, width = x.shape[-2:]
            flat = x.reshape(batch, channels, height * width)
            weight = self.weight.reshape(batch, out_channels, channels)
            out = torch.bmm(weight, flat) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(2), weight, flat)
            return out.reshape(batch, out_channels, height, width)
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        else:
            padding = self.padding
        out = F.conv2d(x.reshape(1, batch * channels, *x.shape[2:]),
                       self.weight.reshape(batch * out_channels, *self.weight.shape[2:]),
                       None if self.bias is None else self.bias.reshape(-1),
                       self.stride, padding, self.dilation, batch * self.groups)
        return out.reshape(batch, out_channels, *out.shape[2:])


def _affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """x · weight + bias with per-instance weight, bias (B, ...) viewed as (B, *shape)."""
    weight = weight.reshape(len(weight), *shape)
    return x * weight if bias is None else torch.addcmul(bias.reshape(len(bias), *shape), x, weight)


class PerInstanceLayerNorm:
    """A `LayerNorm`'s forward for `weight`, `bias` (B, *normalized_shape): normalise, then each
    instance's affine."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None or self.weight.dim() == len(self.normalized_shape):
            return super().forward(x)
        out = F.layer_norm(x, self.normalized_shape, None, None, self.eps)
        return _affine(out, self.weight, self.bias, (1,) * (x.dim() - self.weight.dim()) + tuple(self.normalized_shape))


class PerInstanceBatchNorm2d:
    """An eval-mode `BatchNorm2d`'s forward for `weight`, `bias` (B, C): running statistics, then
    each instance's affine."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None or self.weight.dim() == 1:
            return super().forward(x)
        out = F.batch_norm(x, self.running_mean, self.running_var, None, None, False, 0.0, self.eps)
        return _affine(out, self.weight, self.bias, (x.shape[1], 1, 1))


def _stacked(forward: type, layer: type[nn.Module]) -> type[nn.Module]:
    """`layer` with `forward`'s stacked path (its own forward for shared weights)."""
    return type(f"Stacked{layer.__name__}", (forward, layer), {"__module__": __name__})


#: layer type → its stacked form. Exact types only (a subclass may use its weights otherwise), and
#: timm's LayerNorm, which is torch's with an optional fused kernel.
STACKED: dict[type[nn.Module], type[nn.Module]] = {
    layer: _stacked(forward, layer) for forward, layer in [
        (PerInstanceLinear, nn.Linear), (PerInstanceConv2d, nn.Conv2d), (PerInstanceLayerNorm, nn.LayerNorm),
        (PerInstanceLayerNorm, timm_layers.LayerNorm), (PerInstanceBatchNorm2d, nn.BatchNorm2d)]
}


def _broadcast(param: torch.Tensor) -> bool:
    """A parameter the model adds to (or expands over) the batch: leading dimension 1."""
    return param.dim() >= 2 and param.shape[0] == 1


def _tuned_by_layer(model: nn.Module, tuned: set[str]) -> list[tuple[nn.Module, dict[str, torch.Tensor]]]:
    """Each layer that owns tuned parameters, with those parameters (full name → parameter)."""
    out = []
    for prefix, module in model.named_modules():
        own = {f"{prefix}.{n}" if prefix else n: p for n, p in module.named_parameters(recurse=False)}
        own = {n: p for n, p in own.items() if n in tuned}
        if own:
            out.append((module, own))
    return out


def broadcast_names(model: nn.Module, tuned: set[str]) -> set[str]:
    """The tuned parameters that are batch broadcasts (owned by a layer not in `STACKED`)."""
    return {n for module, own in _tuned_by_layer(model, tuned) if type(module) not in STACKED
            for n, p in own.items() if _broadcast(p)}


def stack(model: nn.Module, tuned: set[str]) -> nn.Module | None:
    """A copy of `model` (sharing its tensors) whose layers take per-instance weights for the
    parameters named in `tuned`, or None if one of them cannot (vmap then runs it). Layer modes
    (train / eval) are those of `model` now."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None)
           for m in model.modules()):
        return None  # batch statistics, tuned or not: each instance must see only its own image
    if any(type(module) not in STACKED and not all(_broadcast(p) for p in own.values())
           for module, own in _tuned_by_layer(model, tuned)):
        return None
    shared = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    copied = copy.deepcopy(model, memo=shared)
    for module in copied.modules():
        if type(module) in STACKED:
            module.__class__ = STACKED[type(module)]
        if hasattr(module, "fused_attn"):  # timm attention, off for vmap's sake (`ViTExplainer`): timm's default
            module.fused_attn = use_fused_attn()
    return copied

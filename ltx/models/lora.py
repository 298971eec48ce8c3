"""Low-rank adapters (LoRA, Hu et al. 2021) for per-instance finetuning with `finetune.scope=lora`.

A target layer y = W x + b becomes y = W x + b + (alpha / r) · B (A x), with A (r × in) and B
(out × r); for a k×k convolution A is a k×k conv with r output channels and the conv's stride,
padding and dilation, and B a 1×1 conv. B starts at zero, so an adapted network starts out equal
to the network it adapts; A starts from the usual Kaiming-uniform init, drawn from a fixed seed
so that every instance (and every run) starts from the same adapters.

`add_lora` returns a *structural* copy of a network: its modules are new, but every parameter and
buffer is the very tensor of the original (nothing is copied), and the adapted layers hold the
original layer's `weight` and `bias` under their own names. So the copy has all of the original's
parameter names plus `<layer>.lora_A` / `<layer>.lora_B`, and the original's weights can be
passed to it by name (`torch.func.functional_call`) — the per-instance finetuning passes the
frozen weights once, shared by all instances, and only the adapters per instance.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

LORA_PARAMS = ("lora_A", "lora_B")


def _init_down(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Kaiming-uniform with a = √5 (nn.Linear's and peft's init for A), from `generator`."""
    weight = torch.empty(shape)
    fan_in = math.prod(shape[1:])
    bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=√5) reduces to U(-1/√fan_in, 1/√fan_in)
    return weight.uniform_(-bound, bound, generator=generator)


class LoRALinear(nn.Module):
    """`base`'s weight and bias (the same tensors) plus a rank-r update B·A scaled by alpha / r."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.scale = rank, alpha / rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(_init_down((rank, base.in_features), generator).to(**factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, **factory))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rank={self.rank}, scale={self.scale:g}"


class LoRAConv2d(nn.Module):
    """`base` (a groups=1, zero-padded Conv2d; the same weight and bias) plus conv_B(conv_A(x)) · alpha / r."""

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float, generator: torch.Generator) -> None:
        super().__init__()
        self.weight = base.weight
        self.bias = base.bias
        self.stride, self.padding, self.dilation = base.stride, base.padding, base.dilation
        self.rank, self.scale = rank, alpha / rank
        out_channels, in_channels, *kernel = base.weight.shape
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(_init_down((rank, in_channels, *kernel), generator).to(**factory))
        self.lora_B = nn.Parameter(torch.zeros(out_channels, rank, 1, 1, **factory))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = {"stride": self.stride, "padding": self.padding, "dilation": self.dilation}
        base = F.conv2d(x, self.weight, self.bias, **conv)
        return base + self.scale * F.conv2d(F.conv2d(x, self.lora_A, **conv), self.lora_B)

    def extra_repr(self) -> str:
        return f"weight={tuple(self.weight.shape)}, rank={self.rank}, scale={self.scale:g}"


def adaptable(module: nn.Module) -> bool:
    """Layers that get adapters: Linear, and Conv2d with groups=1 and zero padding, whose weight trains."""
    if isinstance(module, nn.Linear):
        return module.weight.requires_grad
    if isinstance(module, nn.Conv2d):
        return (module.weight.requires_grad and module.groups == 1 and module.padding_mode == "zeros"
                and isinstance(module.padding, tuple))
    return False


def add_lora(network: nn.Module, rank: int, alpha: float | None = None, *, seed: int = 0,
             include: Callable[[str, nn.Module], bool] | None = None) -> nn.Module:
    """A structural copy of `network` (sharing every tensor) with adapters on its adaptable layers.

    `include(name, module)` narrows the targets (default: every `adaptable` layer). `alpha`
    defaults to `rank` (scale 1). Raises if nothing is adaptable.
    """
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    alpha = float(rank if alpha is None else alpha)
    shared = {id(t): t for t in itertools.chain(network.parameters(), network.buffers())}
    adapted = copy.deepcopy(network, memo=shared)  # new modules, the same tensors
    generator = torch.Generator().manual_seed(seed)
    targets = [(name, module) for name, module in adapted.named_modules()
               if name and adaptable(module) and (include is None or include(name, module))]
    if not targets:
        raise ValueError("no layer to adapt: LoRA needs trainable nn.Linear or nn.Conv2d layers")
    for name, module in targets:  # named_modules order: deterministic adapter inits
        wrapper = LoRALinear if isinstance(module, nn.Linear) else LoRAConv2d
        parent_name, _, child = name.rpartition(".")
        parent = adapted.get_submodule(parent_name) if parent_name else adapted
        setattr(parent, child, wrapper(module, rank, alpha, generator))
    return adapted


def lora_parameters(network: nn.Module) -> dict[str, nn.Parameter]:
    """The adapter parameters of an `add_lora` network, by name."""
    return {n: p for n, p in network.named_parameters() if n.rpartition(".")[2] in LORA_PARAMS}

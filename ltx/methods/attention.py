"""ViT-only baselines read from the attention maps: rollout, GAE and Transformer attribution.

timm's `Attention` modules use fused SDPA by default, which never materialises the attention
probabilities. While a method runs, each block is switched to timm's explicit path
(`fused_attn = False`) and the input of `attn.attn_drop` — the softmaxed attention (B, heads, T, T)
— is recorded; everything is restored afterwards. All three methods aggregate per-layer (T, T)
matrices with one rollout and read the row of the token(s) the classifier head reads.

Transformer attribution is implemented in full: the LRP relevance of every attention map is
propagated from the logit with the rules of Chefer et al.'s reference code, not approximated by A.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from timm.models.vision_transformer import Attention, Block, Mlp, VisionTransformer
from torch import nn

from ltx.classes import class_score
from ltx.methods.base import Method, MethodNotApplicable, autograd_enabled, register_method
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import upsample_to_image

Records = dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]


@contextmanager
def explicit_attention(net: nn.Module) -> Iterator[None]:
    """Make every block compute its softmax explicitly (so it can be read), then restore the flags."""
    modules = [block.attn for block in net.blocks]
    saved = [module.fused_attn for module in modules]
    try:
        for module in modules:
            module.fused_attn = False
        yield
    finally:
        for module, fused in zip(modules, saved, strict=True):
            module.fused_attn = fused


@contextmanager
def recording(modules: Sequence[nn.Module]) -> Iterator[Records]:
    """Record (first input, output) of each module on the next forward pass; hooks removed on exit."""
    records: Records = {}

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        records[module] = (args[0], output)

    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def rollout(layers: Sequence[torch.Tensor], normalize: bool) -> torch.Tensor:
    """Joint attention Π_l (I + Ā_l), later layers on the left; (B, T, T) per layer → (B, T, T).

    `normalize` row-normalises each factor: Abnar & Zuidema's 0.5·A + 0.5·I for row-stochastic A.
    Chefer et al.'s relevance rollout (GAE: R ← R + Ā·R) does not normalise.
    """
    eye = torch.eye(layers[0].shape[-1], dtype=layers[0].dtype, device=layers[0].device)
    joint = eye.expand_as(layers[0])
    for layer in layers:
        step = layer + eye
        if normalize:
            step = step / step.sum(-1, keepdim=True)
        joint = step @ joint
    return joint


def gradient_weighted(relevance: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Ā = mean_heads((∇A ⊙ R).clamp(min=0)): the positive, class-specific part of each head."""
    return (gradient * relevance).clamp(min=0).mean(1)


class AttentionMethod(Method):
    """Shared machinery: the recorded forward pass and the read-out of a joint attention matrix."""

    families = ("vit",)

    def __init__(self, model: ExplainedModel) -> None:
        super().__init__(model)
        self.net = model.model
        if not all(hasattr(b.attn, "fused_attn") and hasattr(b.attn, "attn_drop") for b in self.net.blocks):
            raise MethodNotApplicable(
                f"method {self.name!r} reads attention through timm's `Attention.attn_drop`, which the "
                f"blocks of {model.name!r} do not have: choose another method for it."
            )

    def run(
        self, images: torch.Tensor, classes: torch.Tensor | None, extra: Sequence[nn.Module] = ()
    ) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, Records]:
        """One forward pass: the attention maps per block, their gradients w.r.t. the `class_score` of
        `classes` (a logit, or a pair's difference; None: no backward pass), and the (input, output)
        records of the `extra` modules."""
        drops = [block.attn.attn_drop for block in self.net.blocks]
        with autograd_enabled(), explicit_attention(self.net), recording([*drops, *extra]) as records:
            # Clones leave inference mode (an evaluation loop may call us inside it).
            logits = self.model(images.clone().requires_grad_(classes is not None))
            attentions = [records[drop][0] for drop in drops]
            gradients = None
            if classes is not None:  # samples are independent, so one backward gives per-sample grads
                score = class_score(logits, classes.clone()).sum()
                gradients = list(torch.autograd.grad(score, attentions))
        detached = {module: (i.detach(), o.detach()) for module, (i, o) in records.items()}
        return [a.detach() for a in attentions], gradients, detached

    def to_image(self, joint: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The joint-attention row of what the head reads — the class token, or for average pooling
        the mean of the pooled patch rows — over the patch columns, as an image-sized map."""
        prefix = self.net.num_prefix_tokens
        reads_class_token = getattr(self.net, "global_pool", "token") == "token"
        row = joint[:, 0] if reads_class_token else joint[:, prefix:].mean(1)
        patches = row[:, prefix:].reshape(row.shape[0], *self.net.patch_embed.grid_size)
        return upsample_to_image(patches, size).detach()


@register_method("rollout")
class AttentionRollout(AttentionMethod):
    """Attention rollout (Abnar & Zuidema 2020): heads averaged, identity added for the residual,
    rows normalised, multiplied through the layers. Class-agnostic: `classes` is ignored (so a
    contrastive class mode, whose map it could not change, skips it)."""

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        attentions, _, _ = self.run(images, None)
        return self.to_image(rollout([a.mean(1) for a in attentions], normalize=True), images.shape[-2:])


@register_method("gae")
class GAE(AttentionMethod):
    """Generic Attention-model Explainability (Chefer et al. 2021b): R ← R + Ā·R from R = I, with
    Ā = mean_heads((∇A ⊙ A)⁺) and ∇A the gradient of the explained class's logit (of logit_c −
    logit_c′ for a pair, `ltx.classes.class_score`)."""

    contrastive = True

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        attentions, gradients, _ = self.run(images, classes)
        layers = [gradient_weighted(a, g) for a, g in zip(attentions, gradients, strict=True)]
        return self.to_image(rollout(layers, normalize=False), images.shape[-2:])


# --- Transformer attribution: LRP through a timm ViT with the rules of Chefer et al. (2021a) ----------

_EPS = 1e-9


def _safe_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The reference code's stabilised a / b: b + 1e-9 as denominator, 0 where b == 0."""
    den = b + _EPS
    den = den + (den == 0) * _EPS
    return a / den * (b != 0)


def _lrp_simple(
    fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], relevance: torch.Tensor
) -> list[torch.Tensor]:
    """LRP-0 for a layer without weights (sum, product, pooling): R_i = x_i ⊙ ∂(z · R/z)/∂x_i."""
    inputs = [x.detach().requires_grad_(True) for x in inputs]
    z = fn(*inputs)
    grads = torch.autograd.grad(z, inputs, _safe_divide(relevance, z.detach()))
    return [x.detach() * g for x, g in zip(inputs, grads, strict=True)]


def _lrp_linear(layer: nn.Linear, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """z⁺ rule (LRP-αβ with α = 1, β = 0, bias ignored), the reference code's rule for every Linear."""
    w_pos, w_neg = layer.weight.clamp(min=0), layer.weight.clamp(max=0)
    x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
    z = nn.functional.linear(x_pos, w_pos) + nn.functional.linear(x_neg, w_neg)
    s = _safe_divide(relevance, z)
    return x_pos * (s @ w_pos) + x_neg * (s @ w_neg)


def _lrp_residual(x: torch.Tensor, branch: torch.Tensor, relevance: torch.Tensor) -> list[torch.Tensor]:
    """The reference code's residual rule: LRP-0 split, each part rescaled to carry the share
    |Σ R_part| / (|Σ R_x| + |Σ R_branch|) of the incoming total — per sample here (it used batch 1)."""
    parts = _lrp_simple(torch.add, (x, branch), relevance)
    dims = tuple(range(1, relevance.dim()))
    sums = [part.sum(dims, keepdim=True) for part in parts]
    total, norm = relevance.sum(dims, keepdim=True), sums[0].abs() + sums[1].abs()
    return [
        part * _safe_divide(_safe_divide(s.abs(), norm) * total, s)
        for part, s in zip(parts, sums, strict=True)
    ]


def _recorded_parts(block: Block) -> tuple[nn.Module, ...]:
    """The modules whose (input, output) `_block_relevance` reads."""
    attn, mlp = block.attn, block.mlp
    return (block, block.norm2, mlp.fc1, mlp.fc2, attn.qkv, attn.q_norm, attn.k_norm, attn.proj)


def _block_relevance(
    block: Block, records: Records, relevance: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Propagate relevance (B, T, D) from a block's output to its input; also return the relevance
    of its attention map (B, heads, T, T). LayerNorm, GELU, softmax, dropout and LayerScale pass
    relevance through unchanged, as in the reference code."""
    attn, mlp = block.attn, block.mlp
    x, y = records[block]
    h = records[block.norm2][0]  # after the attention residual
    r_h, r_mlp = _lrp_residual(h, y - h, relevance)
    r_hidden = _lrp_linear(mlp.fc2, records[mlp.fc2][0], r_mlp)
    r_h = r_h + _lrp_linear(mlp.fc1, records[mlp.fc1][0], r_hidden)
    r_x, r_attn = _lrp_residual(x, h - x, r_h)

    r_out = _lrp_linear(attn.proj, records[attn.proj][0], r_attn)
    batch, tokens, _ = r_out.shape
    r_out = r_out.view(batch, tokens, attn.num_heads, attn.head_dim).transpose(1, 2)  # (B, heads, T, d)
    qkv_in, qkv = records[attn.qkv]
    v = qkv.view(batch, tokens, 3, attn.num_heads, attn.head_dim)[:, :, 2].transpose(1, 2)
    q, k = records[attn.q_norm][1], records[attn.k_norm][1]
    r_a, r_v = (r / 2 for r in _lrp_simple(torch.matmul, (records[attn.attn_drop][0], v), r_out))
    r_q, r_k = (r / 2 for r in _lrp_simple(lambda q, k: q @ k.transpose(-2, -1), (q, k), r_a))
    r_qkv = torch.stack([r_q, r_k, r_v]).permute(1, 3, 0, 2, 4).reshape(batch, tokens, -1)  # qkv's layout
    return r_x + _lrp_linear(attn.qkv, qkv_in, r_qkv), r_a


def _lrp_unsupported(net: nn.Module) -> str | None:
    """Why LRP rules are missing for this network's layers, or None for a plain timm ViT."""
    if not isinstance(net, VisionTransformer) or type(net).forward_head is not VisionTransformer.forward_head:
        return f"it propagates relevance through timm VisionTransformer layers only, not {type(net).__name__}"
    if net.attn_pool is not None or not isinstance(net.head, nn.Linear):
        return "it needs a linear head on token or average pooling (no attention pooling)"
    for block in net.blocks:
        if type(block) is not Block or type(block.attn) is not Attention or type(block.mlp) is not Mlp:
            return f"it has LRP rules for timm's Block/Attention/Mlp, not {type(block).__name__} parts"
        if getattr(block.attn, "gate", None) is not None:
            return "it has no LRP rule for gated attention"
    return None


@register_method("transformer_attribution")
class TransformerAttribution(AttentionMethod):
    """Transformer attribution (Chefer et al. 2021a, "Transformer Interpretability Beyond Attention
    Visualization"), in full: relevance starts as the one-hot of the explained class at the logits and
    is propagated back by LRP (z⁺ for Linear layers, LRP-0 for the attention products with the
    relevance halved between their two operands, the normalised residual rule, pass-through for
    LayerNorm/GELU/softmax); each block's attention relevance R_A is then weighted by the gradient,
    Ā = mean_heads((∇A ⊙ R_A)⁺), and rolled out without normalisation from R = I.

    Supports timm `VisionTransformer` with standard blocks (any size, any prefix/register tokens,
    QK-norm, LayerScale); other variants raise `MethodNotApplicable`, as does a contrastive class
    mode: LRP started from e_c − e_c′ is another method (contrastive LRP), not this one.
    """

    def __init__(self, model: ExplainedModel) -> None:
        super().__init__(model)
        reason = _lrp_unsupported(self.net)
        if reason:
            raise MethodNotApplicable(
                f"method {self.name!r} cannot explain {model.name!r}: {reason}. Use 'gae' instead."
            )

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        net = self.net
        parts = [module for block in net.blocks for module in _recorded_parts(block)]
        _, gradients, records = self.run(images, classes, extra=[*parts, net.norm, net.head])
        with autograd_enabled():
            one_hot = nn.functional.one_hot(classes, net.head.out_features).to(images.dtype)
            pooled = _lrp_linear(net.head, records[net.head][0], one_hot)  # fc_norm, head_drop: identity
            (relevance,) = _lrp_simple(net.pool, (records[net.norm][1],), pooled)  # final norm: identity
            attention_relevance = []
            for block in reversed(net.blocks):
                relevance, r_a = _block_relevance(block, records, relevance)
                attention_relevance.insert(0, r_a)
        layers = [gradient_weighted(r, g) for r, g in zip(attention_relevance, gradients, strict=True)]
        return self.to_image(rollout(layers, normalize=False), images.shape[-2:])

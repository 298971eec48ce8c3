"""The class activation map (CAM) family through pytorch-grad-cam: Grad-CAM, Grad-CAM++, Layer-CAM,
LIFT-CAM, Score-CAM, Ablation-CAM and FullGrad (the official LTX code's CNN baselines, Score-CAM added).

One wrapper, `CAM`, runs a pytorch-grad-cam class on a batch; each method is a registered subclass
naming that class (`library`) and, where it differs, the model families it supports or the one
thing it overrides, as pytorch-grad-cam's own subclasses override `get_cam_weights`.

pytorch-grad-cam runs the model it is given, so it gets the explained-model wrapper itself: images
stay in [0, 1] and the wrapper normalises them, while the target layer lives inside the wrapper.
Perturbations made in the input (Score-CAM's masks) are therefore black, as LTX's masks and the
removal tests are. Every map is min-max scaled to [0, 1] by the library (ReLU first).

What each method scores, f_c, is `ltx.classes.class_score` (the logit of c, or logit_c − logit_c′ in
a contrastive class mode), given to the library as a custom target (`ClassScoreTarget`), so every
CAM explains pairs (c, c′) too.

Families: Grad-CAM, Grad-CAM++, Layer-CAM and Score-CAM run on CNNs and ViTs (the patch tokens of a
block reshaped to a grid, as pytorch-grad-cam does for ViTs); LIFT-CAM, Ablation-CAM and FullGrad
on CNNs only, and refuse a ViT with `MethodNotApplicable` (so a run skips them for ViT black boxes).
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import numpy as np
import torch
from pytorch_grad_cam import AblationCAM as LibAblationCAM
from pytorch_grad_cam import FullGrad as LibFullGrad
from pytorch_grad_cam import GradCAM as LibGradCAM
from pytorch_grad_cam import GradCAMPlusPlus as LibGradCAMPlusPlus
from pytorch_grad_cam import LayerCAM as LibLayerCAM
from pytorch_grad_cam import ScoreCAM as LibScoreCAM
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.base_cam import BaseCAM
from torch import nn

from ltx.classes import class_score
from ltx.methods.base import Method, MethodNotApplicable, autograd_enabled, register_method
from ltx.models.explained import ExplainedModel


def default_target_layer(model: ExplainedModel) -> str:
    """The usual Grad-CAM layer, as a path into the raw network (`model.model`).

    ViT: the last block's `norm1` (its tokens still carry per-patch information, unlike the final
    norm whose class token is all the head reads). CNN: the last module whose output is still a
    spatial map (H, W > 1), found by one probe forward pass, so timm and torchvision CNNs alike get
    their last conv stage (e.g. `layer4` of a ResNet) rather than the pooled features.
    """
    net = model.model
    if model.family == "vit":
        return f"blocks.{len(net.blocks) - 1}.norm1"
    finished: list[str] = []

    def note(name: str, module: nn.Module, args: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[-2:]) > 1:
            finished.append(name)

    modules = [(name, module) for name, module in net.named_modules() if name]
    handles = [module.register_forward_hook(partial(note, name)) for name, module in modules]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, model.image_size, model.image_size, device=model.mean.device))
    finally:
        for handle in handles:
            handle.remove()
    if not finished:
        raise ValueError(
            f"no layer of {model.name!r} outputs a spatial map larger than 1x1 at {model.image_size} px: "
            "pass Grad-CAM a target_layer (a module path such as 'layer4')."
        )
    return finished[-1]


class ClassScoreTarget:
    """pytorch-grad-cam's target for one image: the `class_score` of its class () or pair (2,) on the
    model's output for it, (C,) or a batch of them (n, C) (Score-CAM's and Ablation-CAM's passes)."""

    def __init__(self, classes: torch.Tensor) -> None:
        self.classes = classes

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        rows = output if output.dim() == 2 else output[None]
        scores = class_score(rows, self.classes.to(output.device).expand(len(rows), *self.classes.shape))
        return scores if output.dim() == 2 else scores[0]


def _tokens_to_grid(tokens: torch.Tensor, num_prefix_tokens: int, grid_size: tuple[int, int]) -> torch.Tensor:
    """(B, prefix + h·w, D) ViT tokens → (B, D, h, w), the conv-like layout Grad-CAM averages over."""
    patches = tokens[:, num_prefix_tokens:]
    return patches.reshape(patches.shape[0], *grid_size, patches.shape[-1]).permute(0, 3, 1, 2)


class CAM(Method):
    """A pytorch-grad-cam method (`library`) at `target_layer`, upsampled to the image, in [0, 1].

    `target_layer` is a module path into the raw network (e.g. 'layer4', 'blocks.11.norm1');
    None picks `default_target_layer`. The library gets `images_per_call` images at a time (None:
    the whole batch); its results are the same either way, only memory differs.
    """

    library: ClassVar[type[BaseCAM]]
    families: ClassVar[tuple[str, ...] | None] = ("cnn", "vit")
    contrastive = True
    images_per_call: ClassVar[int | None] = None

    def __init__(self, model: ExplainedModel, target_layer: str | None = None) -> None:
        super().__init__(model)
        net = model.model
        self.target_layer = target_layer or default_target_layer(model)
        self.layer = net.get_submodule(self.target_layer)
        self.reshape_transform = None
        if model.family == "vit":
            grid_size = tuple(net.patch_embed.grid_size)
            self.reshape_transform = partial(
                _tokens_to_grid, num_prefix_tokens=net.num_prefix_tokens, grid_size=grid_size
            )

    def make_cam(self) -> BaseCAM:
        """The library's CAM object; its constructor registers the hooks that `explain` releases."""
        return self.library(self.model, [self.layer], reshape_transform=self.reshape_transform)

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        step = self.images_per_call or len(images)
        was_training = self.model.training  # the library calls .eval() on the model it is given
        # Hooks are registered by the constructor: build it here and release them in `finally` (its
        # context manager would swallow IndexErrors).
        cam = self.make_cam()
        try:
            with autograd_enabled():
                targets = [ClassScoreTarget(c) for c in classes.clone()]  # a clone leaves inference mode
                maps = [cam(images[i : i + step].clone().requires_grad_(True), targets[i : i + step])
                        for i in range(0, len(images), step)]
        finally:
            cam.activations_and_grads.release()
            self.model.train(was_training)
        return torch.from_numpy(np.concatenate(maps)).to(images.device)  # float32, one map per image


@register_method("gradcam")
class GradCAM(CAM):
    """Grad-CAM (Selvaraju et al. 2017): ReLU(Σ_k mean_ij(∂f_c/∂A_k) · A_k). CNNs and ViTs.
    Costs one forward and one backward pass per image."""

    library = LibGradCAM


@register_method("gradcampp")
class GradCAMPlusPlus(CAM):
    """Grad-CAM++ (Chattopadhay et al. 2018): as Grad-CAM with weights Σ_ij α_kij · ReLU(g_kij),
    g = ∂f_c/∂A, α = g² / (2g² + Σ_ij A_k · g³) (the paper's closed form for an exponential score).
    CNNs and ViTs. Costs one forward and one backward pass per image."""

    library = LibGradCAMPlusPlus


@register_method("layercam")
class LayerCAM(CAM):
    """Layer-CAM (Jiang et al. 2021): ReLU(Σ_k ReLU(∂f_c/∂A_kij) · A_kij), a weight per position.
    CNNs and ViTs. Costs one forward and one backward pass per image."""

    library = LibLayerCAM


class LibLiftCAM(BaseCAM):
    """LIFT-CAM's weights in pytorch-grad-cam's form: w_k = Σ_ij A_kij · ∂f_c/∂A_kij (activation times
    gradient, summed over the positions of channel k)."""

    def get_cam_weights(self, input_tensor, target_layer, targets, activations: np.ndarray,
                        grads: np.ndarray) -> np.ndarray:
        return (activations * grads).sum(axis=tuple(range(2, activations.ndim)))


@register_method("liftcam")
class LiftCAM(CAM):
    """LIFT-CAM (Jung & Oh 2021): ReLU(Σ_k w_k · A_k) with w_k the DeepLIFT contribution of channel k
    of the target layer to f_c from an all-zero reference, here w_k = Σ_ij A_kij · ∂f_c/∂A_kij.

    That is DeepLIFT exactly where the network after the target layer is linear in A, as a ResNet's
    global average pooling and linear classifier after `layer4` are (the paper's and the official LTX
    code's setting), and its first-order approximation elsewhere. CNNs only: after a ViT block's
    `norm1` come attention and MLPs, where the product is not the DeepLIFT contribution the method
    is defined by. Costs one forward and one backward pass per image.
    """

    library = LibLiftCAM
    families = ("cnn",)


class ChannelScoreCAM(CAM):
    """A CAM that scores each channel of the target layer with forward passes of a perturbed input,
    `batch_size` at a time; the library takes one image per call (memory: channels × image)."""

    images_per_call = 1

    def __init__(self, model: ExplainedModel, target_layer: str | None = None, batch_size: int = 64) -> None:
        super().__init__(model, target_layer)
        self.batch_size = batch_size

    def make_cam(self) -> BaseCAM:
        cam = super().make_cam()
        cam.batch_size = self.batch_size  # both library classes read it from the instance
        return cam


@register_method("scorecam")
class ScoreCAM(ChannelScoreCAM):
    """Score-CAM (Wang et al. 2020): ReLU(Σ_k w_k · A_k), w = softmax_k f_c(x ⊙ M_k) with M_k channel k
    upsampled to the image and min-max scaled (masked pixels black). No gradients. CNNs and ViTs.
    Costs one forward pass per image plus one per channel of the target layer (2048 for ResNet-101's
    layer4, 768 for ViT-B)."""

    library = LibScoreCAM


@register_method("ablationcam")
class AblationCAM(ChannelScoreCAM):
    """Ablation-CAM (Desai & Ramaswamy 2020): ReLU(Σ_k w_k · A_k) with w_k = (f_c(x) − f_c(x; A_k = 0)) /
    f_c(x), the relative drop of the class score when channel k is zeroed. No gradients. Costs one
    forward pass per image plus one per channel of the target layer.

    CNNs only: on a ViT the library ablates a token channel of a LayerNorm output, which is
    negative in places, with min − 1e7 instead of zero (`AblationLayerVit`), not the paper's ablation.
    """

    library = LibAblationCAM
    families = ("cnn",)

    def make_cam(self) -> BaseCAM:
        cam = super().make_cam()
        cam.ablation_layer = AblationLayer()  # the library's default: one instance (and cache) shared by all
        return cam


def _bias_layer(module: nn.Module) -> bool:
    """The layers pytorch-grad-cam's FullGrad reads a bias from: exactly nn.Conv2d and nn.BatchNorm2d."""
    return type(module) in (nn.Conv2d, nn.BatchNorm2d) and module.bias is not None


@register_method("fullgrad")
class FullGrad(CAM):
    """FullGrad (Srinivas & Fleuret 2019): |x ⊙ ∇_x f_c| plus, for every conv and BatchNorm bias b,
    Σ_k |b_k · ∂f_c/∂z_k| (z the layer's output), each channel min-max scaled and upsampled, summed.

    It reads every bias, not a target layer (so it takes none). x is the image in [0, 1]: the
    wrapper's normalisation, a per-channel shift, is a bias the sum leaves out. CNNs only, and only
    those whose biases all sit in nn.Conv2d and nn.BatchNorm2d layers (ResNets: timm and torchvision);
    others (a ViT, LayerNorm or fused norm-activation CNNs) are refused. Costs one forward and one
    backward pass per image, and a resize of every bias channel's map to the image on the CPU.
    """

    library = LibFullGrad
    families = ("cnn",)
    images_per_call = 1  # the library's per-channel maps at image size: (images, channels, H, W) per layer

    def __init__(self, model: ExplainedModel) -> None:
        Method.__init__(self, model)  # no target layer to resolve
        # every bias with a spatial map (all but a Linear classifier's) must be one the library reads
        spatial = [(name, module) for name, module in model.model.named_modules()
                   if isinstance(getattr(module, "bias", None), torch.Tensor)
                   and not isinstance(module, nn.Linear)]
        unread = [name for name, module in spatial if not _bias_layer(module)]
        if unread or not spatial:
            what = (f"biases in layers it does not read ({', '.join(unread[:3])})" if unread
                    else "no conv or BatchNorm bias")
            raise MethodNotApplicable(f"method 'fullgrad' reads nn.Conv2d and nn.BatchNorm2d biases, but "
                                      f"{model.name!r} has {what}: choose another method for it.")

    def make_cam(self) -> BaseCAM:
        return self.library(self.model, [])  # finds its layers itself

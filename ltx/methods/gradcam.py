"""Grad-CAM (Selvaraju et al. 2017) through pytorch-grad-cam, for CNNs and ViTs.

pytorch-grad-cam runs the model it is given, so it gets the explained-model wrapper itself: images
stay in [0, 1] and the wrapper normalises them, while the target layer lives inside the wrapper.
"""

from __future__ import annotations

from functools import partial

import torch
from pytorch_grad_cam import GradCAM as LibGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from ltx.methods.base import Method, autograd_enabled, register_method
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


def _tokens_to_grid(tokens: torch.Tensor, num_prefix_tokens: int, grid_size: tuple[int, int]) -> torch.Tensor:
    """(B, prefix + h·w, D) ViT tokens → (B, D, h, w), the conv-like layout Grad-CAM averages over."""
    patches = tokens[:, num_prefix_tokens:]
    return patches.reshape(patches.shape[0], *grid_size, patches.shape[-1]).permute(0, 3, 1, 2)


@register_method("gradcam")
class GradCAM(Method):
    """Grad-CAM: ReLU(Σ_k mean(∂f_c/∂A_k) · A_k) at `target_layer`, upsampled to the image.

    `target_layer` is a module path into the raw network (e.g. 'layer4', 'blocks.11.norm1');
    None picks `default_target_layer`. pytorch-grad-cam min-max scales each map to [0, 1].
    Costs one forward and one backward pass per image.
    """

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

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        targets = [ClassifierOutputTarget(c) for c in classes.tolist()]
        was_training = self.model.training  # the library calls .eval() on the model it is given
        # Hooks are registered by the constructor: build it here and release them in `finally` (its
        # context manager would swallow IndexErrors).
        cam = LibGradCAM(self.model, [self.layer], reshape_transform=self.reshape_transform)
        try:
            with autograd_enabled():
                maps = cam(images.clone().requires_grad_(True), targets)
        finally:
            cam.activations_and_grads.release()
            self.model.train(was_training)
        return torch.from_numpy(maps).to(images.device)  # float32, one map per image

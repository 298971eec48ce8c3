"""Baseline saliency methods: the method contract, no state left behind, and known answers."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from ltx.methods import attention, gradcam, gradients, rise  # noqa: F401  (registers the methods)
from ltx.methods.base import METHODS, MethodNotApplicable, create_method
from ltx.models.explained import ExplainedModel

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "method"
ANY_MODEL = [
    "gradcam", "gradcampp", "layercam", "scorecam", "ig", "idgi", "saliency", "gradient_x_input", "rise"
]
VIT_ONLY = ["rollout", "gae", "transformer_attribution"]
CNN_ONLY = ["liftcam", "ablationcam", "fullgrad"]
CAMS = ["gradcam", "gradcampp", "layercam", "liftcam", "scorecam", "ablationcam", "fullgrad"]
CASES = [(name, "cnn") for name in ANY_MODEL + CNN_ONLY] + [(name, "vit") for name in ANY_MODEL + VIT_ONLY]
ONE_FAMILY = [(name, "vit") for name in ANY_MODEL + VIT_ONLY] + [(name, "cnn") for name in CNN_ONLY]
CHEAP = {"rise": {"num_masks": 48, "batch_size": 64}, "ig": {"n_steps": 8}, "idgi": {"n_steps": 8}}
# One forward pass per channel of the target layer: resnet10t's layer1 has 64 channels, layer4 512.
CHEAP_CNN = {"scorecam": {"target_layer": "layer1"}, "ablationcam": {"target_layer": "layer1"}}


def tiny_vit(seed: int = 0, **kwargs) -> ExplainedModel:
    torch.manual_seed(seed)
    net = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=64,
        patch_size=8,
        depth=2,
        embed_dim=64,
        num_heads=2,
        num_classes=8,
        **kwargs,
    )
    return ExplainedModel(net, mean=(0.5,) * 3, std=(0.5,) * 3, image_size=64)


def tiny_cnn() -> ExplainedModel:
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=8)
    return ExplainedModel(net, mean=(0.5,) * 3, std=(0.5,) * 3, image_size=64)


@pytest.fixture(scope="module")
def vit() -> ExplainedModel:
    model = tiny_vit()
    model.model.blocks[0].attn.fused_attn = False  # mixed flags: each must come back as it was
    return model


@pytest.fixture(scope="module")
def cnn() -> ExplainedModel:
    return tiny_cnn()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 64, 64, generator=generator), torch.tensor([0, 5, 7])


def cheap(name: str, model: ExplainedModel) -> dict:
    return {**CHEAP.get(name, {}), **(CHEAP_CNN.get(name, {}) if model.family == "cnn" else {})}


def build(name: str, model: ExplainedModel, **kwargs):
    return create_method(name, model, **{**cheap(name, model), **kwargs})


def model_state(model: ExplainedModel) -> dict[str, object]:
    """Everything a method could leave changed behind it."""
    modules = dict(model.named_modules())
    return {
        "hooks": {
            name
            for name, m in modules.items()
            if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
        },
        "modules": list(modules.values()),  # Ablation-CAM swaps its target layer out while it runs
        "fused": [m.fused_attn for m in modules.values() if hasattr(m, "fused_attn")],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "training": [m.training for m in modules.values()],
    }


def in_region(maps: torch.Tensor, regions: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of each map's k highest pixels that lie in its region."""
    top = maps.flatten(1).topk(k).indices
    return regions.flatten(1).gather(1, top).float().mean(1)


# --- the method contract -----------------------------------------------------------------------------


def test_all_baselines_registered() -> None:
    assert set(ANY_MODEL + VIT_ONLY + CNN_ONLY) <= set(METHODS)


@pytest.mark.parametrize(("name", "family"), CASES)
def test_maps_and_no_state_left(name: str, family: str, batch, request: pytest.FixtureRequest) -> None:
    model: ExplainedModel = request.getfixturevalue(family)
    model.train()  # a LightningModule may hold the wrapper in train mode; methods must not change it
    images, classes = batch
    before = model_state(model)
    maps = build(name, model)(images, classes)
    assert maps.shape == (3, 64, 64) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and not maps.requires_grad
    assert maps.flatten(1).std(1).max() > 0  # Grad-CAM's ReLU may zero some maps of a random model
    assert model_state(model) == before and not before["hooks"]


@pytest.mark.parametrize(("name", "family"), CASES)
def test_batch_does_not_mix_samples(name: str, family: str, batch, request: pytest.FixtureRequest) -> None:
    method = build(name, request.getfixturevalue(family))
    images, classes = batch
    together = method(images, classes)
    alone = torch.cat([method(images[i : i + 1], classes[i : i + 1]) for i in range(len(images))])
    torch.testing.assert_close(together, alone, rtol=1e-3, atol=1e-5 * together.abs().max().item())


@pytest.mark.parametrize(("name", "family"), ONE_FAMILY)
def test_runs_inside_inference_mode(name: str, family: str, batch, request: pytest.FixtureRequest) -> None:
    """Evaluation loops run under inference_mode; gradient methods must still work there."""
    images, classes = batch
    method = build(name, request.getfixturevalue(family))
    with torch.inference_mode():
        maps = method(images.clone(), classes.clone())
    assert torch.isfinite(maps).all()


@pytest.mark.parametrize("name", VIT_ONLY)
def test_vit_only_methods_refuse_cnns(name: str, cnn: ExplainedModel) -> None:
    with pytest.raises(MethodNotApplicable, match=name):
        create_method(name, cnn)


@pytest.mark.parametrize("name", CNN_ONLY)
def test_cnn_only_methods_refuse_vits(name: str, vit: ExplainedModel) -> None:
    one_line = f"^method '{name}' needs a cnn model, but 'model' is a vit: [^\n]*$"
    with pytest.raises(MethodNotApplicable, match=one_line):
        create_method(name, vit)


def test_fullgrad_refuses_cnns_whose_biases_it_cannot_read(region_model) -> None:
    with pytest.raises(MethodNotApplicable, match="'fullgrad' .* has no conv or BatchNorm bias"):
        create_method("fullgrad", region_model[0])  # bias-free convs, no BatchNorm
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    with pytest.raises(MethodNotApplicable, match=r"layers it does not read \(1\)"):  # the GroupNorm
        create_method("fullgrad", ExplainedModel(net, mean=(0.0,) * 3, std=(1.0,) * 3, image_size=16))


@pytest.mark.parametrize(
    "variant",
    [dict(reg_tokens=3), dict(class_token=False, global_pool="avg"), dict(qk_norm=True, init_values=0.1)],
    ids=["registers", "avg-pool-no-cls", "qknorm-layerscale"],
)
@pytest.mark.parametrize("name", [*VIT_ONLY, "gradcam"])
def test_vit_variants(name: str, variant: dict, batch) -> None:
    model = tiny_vit(**variant)
    images, classes = batch
    maps = build(name, model)(images, classes)
    assert maps.shape == (3, 64, 64) and torch.isfinite(maps).all() and maps.flatten(1).std(1).max() > 0


def test_transformer_attribution_refuses_layers_without_lrp_rules() -> None:
    with pytest.raises(MethodNotApplicable, match="transformer_attribution"):
        create_method("transformer_attribution", tiny_vit(global_pool="map"))


@pytest.mark.parametrize(("name", "family"), ONE_FAMILY)
def test_config_instantiates_the_method(name: str, family: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(family)
    path = CONF_DIR / f"{name}.yaml"
    assert path.read_text().startswith(f"# @package method.{name}\n")
    config = OmegaConf.load(path)
    method = instantiate(config, **cheap(name, model))(model=model)
    assert type(method) is METHODS[name]


# --- known answers -----------------------------------------------------------------------------------


class RegionGate(nn.Module):
    """(B, 1, H, W) → (B, C, H, W): channel c keeps the input only inside region c."""

    def __init__(self, regions: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("regions", regions.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.regions


class RegionModel(nn.Module):
    """Logit c = Σ over region c of the pixel's mean colour / 16: class c looks only at its region."""

    def __init__(self, regions: torch.Tensor) -> None:
        super().__init__()
        self.num_classes = len(regions)
        self.gray = nn.Conv2d(3, 1, 1, bias=False)
        nn.init.constant_(self.gray.weight, 1 / 3)
        self.gate = RegionGate(regions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.gray(x)).sum((2, 3)) / 16


@pytest.fixture(scope="module")
def region_model() -> tuple[ExplainedModel, torch.Tensor]:
    regions = torch.zeros(4, 64, 64, dtype=torch.bool)
    for c, (top, left) in enumerate([(4, 4), (4, 40), (40, 12), (36, 44)]):
        regions[c, top : top + 16, left : left + 16] = True
    model = ExplainedModel(RegionModel(regions), mean=(0.0,) * 3, std=(1.0,) * 3, image_size=64)
    return model, regions


@pytest.mark.parametrize(
    ("name", "kwargs", "min_fraction"),
    [
        ("ig", {}, 1.0),
        ("idgi", {}, 1.0),
        ("saliency", {}, 1.0),
        ("gradient_x_input", {}, 1.0),
        ("gradcam", {}, 1.0),  # default layer: the region gate, the last spatial map
        ("gradcampp", {}, 1.0),
        ("layercam", {}, 1.0),
        ("liftcam", {}, 1.0),
        ("scorecam", {}, 1.0),
        ("ablationcam", {}, 1.0),
        ("rise", {"num_masks": 1000, "batch_size": 4000}, 0.9),  # smooth masks blur the region's border
    ],
)
def test_methods_find_the_region_the_class_looks_at(
    region_model, name: str, kwargs: dict, min_fraction: float
) -> None:
    model, regions = region_model
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 0.5 + 0.5
    classes = torch.tensor([0, 1, 2, 3])
    maps = create_method(name, model, **kwargs)(images, classes)
    assert (in_region(maps, regions[classes], k=128) >= min_fraction).all()


def test_gradcam_default_layers(cnn: ExplainedModel, vit: ExplainedModel, region_model) -> None:
    assert gradcam.default_target_layer(cnn) == "layer4"
    assert gradcam.default_target_layer(vit) == "blocks.1.norm1"
    assert gradcam.default_target_layer(region_model[0]) == "gate"
    assert create_method("gradcam", cnn, target_layer="layer3.0").layer is cnn.model.layer3[0]


@pytest.mark.parametrize(("name", "family"), [(n, f) for n, f in CASES if n in [*CAMS, "ig", "idgi"]])
def test_maps_depend_on_the_class(name: str, family: str, batch, request: pytest.FixtureRequest) -> None:
    method = build(name, request.getfixturevalue(family))
    images, _ = batch
    first, second = (method(images, torch.full((3,), c)) for c in (1, 6))
    scale = first.abs().max().item()  # CAMs are scaled to [0, 1]; path methods' maps are logit-sized
    assert not torch.allclose(first, second, rtol=1e-3, atol=1e-3 * scale)


class PooledConvNet(nn.Module):
    """Conv → ReLU (`features`, at image size) → global average pooling → linear: the gradient of
    logit c w.r.t. A_kij is W_ck / (h·w) at every position."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def test_liftcam_by_hand() -> None:
    """w_k = Σ_ij A_kij · W_ck / (h·w) = W_ck · mean(A_k); map = ReLU(Σ_k w_k A_k), min-max scaled.
    Grad-CAM's weights here are W_ck / (h·w) alone: a map the LIFT-CAM formula must not give."""
    torch.manual_seed(0)
    net = PooledConvNet()
    model = ExplainedModel(net, mean=(0.0,) * 3, std=(1.0,) * 3, image_size=16)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    classes = torch.tensor([0, 2])
    with torch.no_grad():
        activations = net.features(images)
    weights = net.fc.weight[classes] * activations.mean((2, 3))
    expected = (weights[:, :, None, None] * activations).sum(1).clamp(min=0)
    expected = expected - expected.amin((1, 2), keepdim=True)
    expected = expected / expected.amax((1, 2), keepdim=True)
    maps = create_method("liftcam", model, target_layer="features")(images, classes)
    torch.testing.assert_close(maps, expected, rtol=0, atol=1e-6)
    gradcam_maps = create_method("gradcam", model, target_layer="features")(images, classes)
    assert (gradcam_maps - expected).abs().amax() > 0.05


@pytest.mark.filterwarnings("ignore:Setting forward, backward hooks and attributes on non-linear:UserWarning")
def test_liftcam_weights_are_deeplift_contributions_after_a_resnet_layer4(cnn: ExplainedModel, batch) -> None:
    """The official LIFT-CAM code's weights: captum's DeepLift on the network after `layer4` (pooling
    and the linear classifier) from an all-zero reference, summed over positions."""
    from captum.attr import DeepLift

    class Head(nn.Module):
        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return cnn.model.forward_head(features)

    images, classes = batch
    with torch.enable_grad():
        activations = cnn.model.forward_features(cnn.normalize(images)).detach().requires_grad_(True)
        scores = cnn.model.forward_head(activations).gather(1, classes[:, None])
        (grads,) = torch.autograd.grad(scores.sum(), activations)
        contributions = DeepLift(Head()).attribute(activations, torch.zeros_like(activations), target=classes)
    cam = gradcam.LibLiftCAM(cnn, [cnn.model.layer4])
    try:
        weights = cam.get_cam_weights(images, cnn.model.layer4, [], activations.detach().numpy(), grads.numpy())
    finally:
        cam.activations_and_grads.release()
    expected = contributions.detach().sum((2, 3))
    torch.testing.assert_close(torch.from_numpy(weights), expected, rtol=1e-4, atol=1e-6)


def test_ig_internal_batch_matches_one_pass(vit: ExplainedModel, batch) -> None:
    images, classes = batch
    chunked = create_method("ig", vit, n_steps=8, internal_batch_size=2)(images, classes)
    torch.testing.assert_close(chunked, create_method("ig", vit, n_steps=8)(images, classes))


class AffineModel(nn.Module):
    """Logits W·x + b of the flattened input: the gradient of logit c is W_c at every point."""

    num_classes = 3

    def __init__(self, size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * size * size, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_path_methods_on_an_affine_model() -> None:
    """With f_c(x) = w·x + b in pixel space (w = W_c / std, per channel), from the black image:
    IG = x ⊙ w, and IDGI = w ⊙ w · (w·x) / ||w||² (every step's gradient is w, its change w·Δx)."""
    torch.manual_seed(0)
    std = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
    model = ExplainedModel(AffineModel(8), mean=(0.5,) * 3, std=std.tolist(), image_size=8).double()
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    classes = torch.tensor([0, 2, 1])
    w = model.model.fc.weight.detach()[classes].view(3, 3, 8, 8) / std[:, None, None]
    ig = create_method("ig", model, n_steps=8).attributions(images, classes)
    idgi = create_method("idgi", model, n_steps=8, internal_batch_size=5).attributions(images, classes)
    along = (w * images).sum((1, 2, 3)) / w.square().sum((1, 2, 3))
    # Captum's quadrature weights are float32 (they sum to 1 within 2⁻²⁶ ≈ 1.5e-8), IDGI's path is
    # float64 (u = 1.1e-16: logits differenced over 192 terms lose ~1e-13 relative); a wrong path,
    # step or direction is off by far more than either tolerance.
    torch.testing.assert_close(ig, images * w, rtol=1e-7, atol=0)
    torch.testing.assert_close(idgi, w.square() * along[:, None, None, None], rtol=1e-9, atol=1e-15)


def idgi_one_by_one(model: ExplainedModel, image: torch.Tensor, target: int, n: int) -> torch.Tensor:
    """The paper's Algorithm 1 as its official code writes it, one image and one point at a time."""
    gradients, values = [], []
    for i in range(n + 1):
        point = (image * i / n).requires_grad_(True)
        value = model(point[None])[0, target]
        gradients.append(torch.autograd.grad(value, point)[0])
        values.append(value.detach())
    steps = [values[i + 1] - values[i] for i in range(n)]  # the last gradient is not used
    return sum(g.square() * step / g.square().sum() for g, step in zip(gradients, steps, strict=False))


@pytest.mark.parametrize("internal_batch_size", [None, 1, 5, 7])
def test_idgi_is_algorithm_1_and_complete_on_a_nonlinear_cnn(internal_batch_size: int | None, batch) -> None:
    """Batched over images and points, in chunks that split paths (24 jobs): the same as the plain
    loop, and the attributions sum to f_c(x) − f_c(black) (float64)."""
    torch.manual_seed(0)
    model = ExplainedModel(PooledConvNet(), mean=(0.5,) * 3, std=(0.25,) * 3, image_size=64).double()
    images, classes = batch[0].double(), batch[1] % PooledConvNet.num_classes
    method = create_method("idgi", model, n_steps=8, internal_batch_size=internal_batch_size)
    attributions = method.attributions(images, classes)
    expected = torch.stack(
        [idgi_one_by_one(model, image, c, 8) for image, c in zip(images, classes.tolist(), strict=True)]
    )
    # float64: the two differ by ~1e-16 of the largest value (float32 would by ~3e-7)
    torch.testing.assert_close(attributions, expected, rtol=0, atol=1e-12 * expected.abs().max().item())
    with torch.no_grad():
        logits = model(torch.cat([images, torch.zeros_like(images[:1])]))
    change = logits[:3].gather(1, classes[:, None])[:, 0] - logits[3, classes]
    # Each segment's directions sum to 1 within ~P·u (P = 12,288 values, u = 1.1e-16): ≤ 1e-12 of the
    # logits' size (measured: 6e-17), where float32 rounding alone misses by ~4e-8 of it and IG on
    # the same 8 steps by ~3e-3.
    scale = logits.abs().max().item()
    torch.testing.assert_close(attributions.sum((1, 2, 3)), change, rtol=0, atol=1e-10 * scale)
    assert torch.equal(method(images, classes), attributions.abs().sum(1))


def test_idgi_runs_on_igs_steps() -> None:
    """Reported beside IG: the same steps and chunk size, so the same cost per image."""
    ig, idgi = (OmegaConf.load(CONF_DIR / f"{name}.yaml") for name in ("ig", "idgi"))
    assert (idgi.n_steps, idgi.internal_batch_size) == (ig.n_steps, ig.internal_batch_size)


def test_rise_is_seeded(vit: ExplainedModel, batch) -> None:
    images, classes = batch
    first = build("rise", vit, seed=3)(images, classes)
    torch.testing.assert_close(first, build("rise", vit, seed=3)(images, classes))
    assert not torch.allclose(first, build("rise", vit, seed=4)(images, classes))


@pytest.mark.parametrize("variant", [{}, dict(reg_tokens=2)], ids=["cls", "cls+registers"])
def test_rollout_of_uniform_attention_is_uniform(variant: dict, batch) -> None:
    model = tiny_vit(**variant)
    for block in model.model.blocks:  # q = k = 0: every token attends equally to every token
        nn.init.zeros_(block.attn.qkv.weight)
        nn.init.zeros_(block.attn.qkv.bias)
    maps = create_method("rollout", model)(*batch)
    torch.testing.assert_close(maps, maps.mean().expand_as(maps))


def test_class_dependence(vit: ExplainedModel, batch) -> None:
    """GAE and Transformer attribution explain a class, rollout does not; TA is not GAE (R_A ≠ A)."""
    images, _ = batch
    maps = {name: [build(name, vit)(images, torch.full((3,), c)) for c in (1, 6)] for name in VIT_ONLY}
    torch.testing.assert_close(*maps["rollout"])
    for name in ("gae", "transformer_attribution"):
        assert not torch.allclose(*maps[name], rtol=1e-3, atol=0)
    assert not torch.allclose(maps["gae"][0], maps["transformer_attribution"][0], rtol=1e-2, atol=0)


def test_lrp_linear_rule_conserves_relevance_per_sample() -> None:
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(6, 4)
    nn.init.normal_(layer.weight, generator=generator)
    layer.weight.data[:, 0] = 1.0  # with positive inputs, every z⁺ denominator is then > 0
    x = torch.rand(2, 5, 6, generator=generator)
    relevance = torch.rand(2, 5, 4, generator=generator) * torch.tensor([1.0, 100.0])[:, None, None]
    conserved = attention._lrp_linear(layer, x, relevance).sum((1, 2))
    # All terms positive (no cancellation): float32 roundings add up relatively, u = eps32/2 each:
    # z (6 terms) + R/z + s·w⁺ (4 terms) + x·(…) + the sum of 30, and 20 on the reference side:
    # ≤ 61 u; the values reach ~10³ (×100 relevance), so the float32 default rtol is too tight.
    u = torch.finfo(torch.float32).eps / 2
    torch.testing.assert_close(conserved, relevance.sum((1, 2)), rtol=61 * u, atol=0)


def test_lrp_residual_rule_gives_each_branch_its_share_per_sample() -> None:
    """Skip and branch pull in opposite directions: each gets |S_part| / (|S_skip| + |S_branch|) of
    the total, with S_part the part's LRP-0 relevance, computed per sample."""
    generator = torch.Generator().manual_seed(0)
    skip = 1 + torch.rand(3, 5, 4, generator=generator)
    branch = -0.5 * torch.rand(3, 5, 4, generator=generator)
    relevance = torch.rand(3, 5, 4, generator=generator)
    with torch.enable_grad():
        parts = attention._lrp_residual(skip, branch, relevance)
    lrp0 = [(part * relevance / (skip + branch)).sum((1, 2)).abs() for part in (skip, branch)]
    total = relevance.sum((1, 2))
    # Same-sign sums of 20 terms (skip + branch ≥ 0.5: no cancellation) on both sides, u = eps32/2
    # each: the parts (20 + 3) and their rescaling (sum of 20, two divides, a product) against the
    # reference's LRP-0 sums (20 + 3), the shares' divide and product and the total (20): ≤ 80 u.
    u = torch.finfo(torch.float32).eps / 2
    for part, share in zip(parts, lrp0, strict=True):
        torch.testing.assert_close(part.sum((1, 2)), share / (lrp0[0] + lrp0[1]) * total, rtol=80 * u, atol=0)


def test_random_maps_depend_on_the_image_not_the_batch():
    from ltx.methods import create_method
    from tests.helpers import tiny_explained

    method = create_method("random", tiny_explained("ltx_shapes_resnet"), seed=3)
    images = torch.rand(4, 3, 64, 64)
    together = method(images, torch.zeros(4, dtype=torch.long))
    reversed_alone = torch.cat([method(images[i:i + 1], torch.zeros(1, dtype=torch.long)) for i in (3, 2, 1, 0)])
    assert torch.equal(together, reversed_alone.flip(0))
    assert not torch.equal(together[0], together[1])
    other_seed = create_method("random", tiny_explained("ltx_shapes_resnet"), seed=4)(images[:1], torch.zeros(1))
    assert not torch.equal(other_seed[0], together[0])

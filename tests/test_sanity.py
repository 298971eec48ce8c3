"""Sanity checks (`ltx.stages.sanity`, `python -m ltx.sanity`): the checks catch a method that does
not explain the model (an edge detector) or the class (the same map for every class), and pass
saliency / Grad-CAM where they should."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ltx.methods import create_method
from ltx.methods.base import Method
from ltx.models.explained import ExplainedModel
from ltx.stages.sanity import (
    SanityRow,
    class_check,
    map_similarity,
    model_check,
    randomisation_order,
    randomised,
    sanity_methods,
    verdicts,
)
from tests.helpers import TINY, compose_config, tiny_explained

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = 0.5


class Edges(Method):
    """An edge detector: the image's gradient magnitude, whatever the model and the class."""

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        grey = images.mean(1)
        dx = torch.nn.functional.pad(grey[:, :, 1:] - grey[:, :, :-1], (0, 1))
        dy = torch.nn.functional.pad(grey[:, 1:] - grey[:, :-1], (0, 0, 0, 1))
        return (dx**2 + dy**2).sqrt()


class RegionNet(nn.Module):
    """Class c reads only its own quarter of the image (random weights): a class-dependent model."""

    num_classes = 4

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
        quarters = torch.zeros(4, 1, 64, 64)
        for c in range(4):
            quarters[c, :, 32 * (c // 2):32 * (c // 2 + 1), 32 * (c % 2):32 * (c % 2 + 1)] = 1
        self.register_buffer("quarters", quarters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,kchw->bk", x, self.weights * self.quarters)


def images_and_classes(model: ExplainedModel, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return images, model(images).argmax(1)


def rows_of(method: str, check: str, results: list[tuple[int, str, float, float]]) -> list[SanityRow]:
    return [SanityRow("tiny", method, check, d, layer, rho, ssim, 4) for d, layer, rho, ssim in results]


def test_layer_groups_from_the_top_for_vit_and_resnet():
    assert randomisation_order(tiny_explained("ltx_textures_vit")) == [
        "head", "norm", "blocks.3", "blocks.2", "blocks.1", "blocks.0", "cls_token+pos_embed", "patch_embed"]
    assert randomisation_order(tiny_explained("ltx_textures_resnet")) == [
        "fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]


def test_randomised_changes_its_groups_alone_with_the_same_weights_in_both_checks():
    model = tiny_explained("ltx_textures_resnet")
    top = randomised(model, ["fc", "layer4"], seed=0)
    alone = randomised(model, ["layer4"], seed=0)
    assert not torch.equal(top.model.fc.weight, model.model.fc.weight)
    assert torch.equal(top.model.layer3[0].conv1.weight, model.model.layer3[0].conv1.weight)
    assert torch.equal(top.model.layer4[0].conv1.weight, alone.model.layer4[0].conv1.weight)
    assert torch.equal(alone.model.fc.weight, model.model.fc.weight)  # and the original is untouched


def test_map_similarity_is_rank_correlation_and_handles_constant_maps():
    a = torch.rand(3, 16, 16)
    rho, ssim = map_similarity(a, 2 * a + 1)  # same ranks, another scale
    assert torch.allclose(rho, torch.ones(3)) and torch.allclose(ssim, torch.ones(3), atol=1e-4)
    assert torch.allclose(map_similarity(a, -a)[0], -torch.ones(3))
    flat = torch.zeros(3, 16, 16)
    assert map_similarity(flat, a)[0].tolist() == [0.0] * 3 and map_similarity(flat, flat)[0].tolist() == [1.0] * 3


@pytest.mark.parametrize("check", ["cascading", "independent"])
def test_an_edge_detector_fails_the_model_check_and_saliency_passes(check):
    model = tiny_explained("ltx_textures_resnet")
    images, classes = images_and_classes(model)
    edges = model_check(lambda m, key: Edges(m)(images, classes), model, check, seed=0)
    saliency = model_check(lambda m, key: create_method("saliency", m)(images, classes), model, check, seed=0)
    assert len(edges) == len(randomisation_order(model)) + 1
    assert all(rho > 0.99 for _, _, rho, _ in edges)
    rows = rows_of("edges", "cascading", edges) + rows_of("saliency", "cascading", saliency)
    verdict = {v["method"]: v for v in verdicts(rows, THRESHOLD)}
    if check == "cascading":  # the verdict reads full cascading randomisation
        assert verdict["edges"]["model check"] == "FAIL" and verdict["saliency"]["model check"] == "pass"
        assert saliency[-1][2] < THRESHOLD
    else:  # one group alone: the maps change for some group
        assert min(rho for _, _, rho, _ in saliency) < THRESHOLD


def test_a_class_blind_method_fails_the_class_check_and_gradients_pass_on_a_region_model():
    model = ExplainedModel(RegionNet(), mean=[0, 0, 0], std=[1, 1, 1], image_size=64)
    images, classes = images_and_classes(model)
    with torch.no_grad():
        lowest = model(images).argmin(1)
    assert (lowest != classes).all()
    results = {}
    for name, method in {"edges": Edges(model), "saliency": create_method("saliency", model),
                         "gradient_x_input": create_method("gradient_x_input", model)}.items():
        rho, _ = class_check(lambda wanted, m=method: m(images, wanted), classes, lowest)
        results[name] = rho
    assert results["edges"] == pytest.approx(1.0)
    assert results["saliency"] < THRESHOLD and results["gradient_x_input"] < THRESHOLD
    rows = [SanityRow("tiny", name, "class", 0, "top-1 vs lowest", rho, 1.0, 4) for name, rho in results.items()]
    verdict = {v["method"]: v["class check"] for v in verdicts(rows, THRESHOLD)}
    assert verdict == {"edges": "FAIL", "saliency": "pass", "gradient_x_input": "pass"}


def test_the_checks_leave_out_model_independent_and_metric_selected_methods():
    cfg = compose_config(["method=[ltx,ltx_sel,gradcam,random]"])
    assert list(sanity_methods(cfg, None)) == ["ltx", "gradcam"]  # random, ltx_sel and the oracle gt_mask out
    with pytest.raises(ValueError, match="not methods of this run"):
        sanity_methods(cfg, ["saliency"])


@pytest.mark.slow
def test_sanity_command_on_a_tiny_run(tmp_path, cache_dir):
    out = tmp_path / "run"
    env = {**os.environ, "LTX_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    tiny = [a for a in TINY if not a.startswith(("method", "backbone.textures_vit"))]
    proc = subprocess.run([sys.executable, "-m", "ltx.run", *tiny, "backbone=textures_resnet", "class_modes=[predicted]",
                           "method=[ltx,saliency,random]", "method.ltx.steps=1", "eval=paper", "logger=[]",
                           f"hydra.run.dir={out}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sanity = [sys.executable, "-m", "ltx.sanity", f"run_dir={out}", "sanity.num_images=2", "sanity.ltx_pretrain_steps=2",
              "sanity.ltx_pretrain_images=8", "sanity.ltx_depths=[-1]"]
    proc = subprocess.run(sanity, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "sanity.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["check"]) for r in rows} == {("ltx", "class"), ("ltx", "cascading"), (
        "saliency", "class"), ("saliency", "cascading"), ("saliency", "independent")}  # random left out
    assert sorted(int(r["depth"]) for r in rows if r["method"] == "ltx" and r["check"] == "cascading") == [0, 7]
    assert all("pretrained 2 steps" in r["setting"] for r in rows if r["method"] == "ltx" and r["check"] != "class")
    assert (out / "sanity_textures_resnet.png").is_file()
    assert "model check" in proc.stdout + proc.stderr and "LTX budget" in proc.stdout + proc.stderr
    bad = subprocess.run([*sanity[:3], f"run_dir={tmp_path}", "sanity.checks=[cascading]"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "error: no run config" in bad.stderr
    assert OmegaConf.load(out / ".hydra" / "config.yaml").method.ltx.steps == 1  # the run's config untouched

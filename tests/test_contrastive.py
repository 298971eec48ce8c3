"""Contrastive explanations ("why c and not c′", issue 18 part 2): one score of c vs c′ (`ltx.classes`)
read by the loss, the methods and the metrics, each checked where the answer is known."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ltx.classes import class_hit, class_probability, class_score, contrast_pairs
from ltx.lit.explain import ExplainModule
from ltx.losses import LTXLoss
from ltx.masking import ConstantBaseline
from ltx.methods.base import MethodNotApplicable, create_method
from ltx.methods.gradients import _attribute
from ltx.methods.ltx import LTX
from ltx.metrics import PerturbationSuite, create_metric
from ltx.models.explainer import Masks, build_explainer
from ltx.pipeline import prepare_data
from ltx.stages.checks import check_config
from ltx.stages.evaluate import Evaluation, build_metrics, evaluate
from ltx.stages.explain import explain_instances
from ltx.store import MapKey, MapStore, SavedMaps
from tests.helpers import compose_config, tiny_explained, tiny_vit

CONTRASTIVE = ["contrastive_pos", "contrastive_neg", "contrastive_ins", "contrastive_del"]


@pytest.fixture(scope="module")
def cnn():
    return tiny_explained("ltx_textures_resnet")


# --- the score of c vs c′ --------------------------------------------------------------------------

def test_scores_of_a_class_and_of_a_pair_by_hand():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 5.0]])
    classes, pairs = torch.tensor([0, 2]), torch.tensor([[0, 2], [2, 1]])
    assert torch.equal(class_score(logits, classes), torch.tensor([3.0, 5.0]))
    assert torch.equal(class_score(logits, pairs), torch.tensor([1.0, 0.0]))
    assert torch.allclose(class_probability(logits, classes), logits.softmax(-1)[[0, 1], [0, 2]])
    assert torch.allclose(class_probability(logits, pairs), torch.sigmoid(torch.tensor([1.0, 0.0])))
    assert torch.equal(class_hit(logits, classes), torch.tensor([1.0, 0.0]))  # a tie of 1 and 2: top-1 is 1
    assert torch.equal(class_hit(logits, pairs), torch.tensor([1.0, 1.0]))  # a pair's tie counts for c


def test_contrast_pairs_runner_up_or_given_class():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]])
    assert contrast_pairs(logits, torch.tensor([0, 1])).tolist() == [[0, 2], [1, 2]]  # runner-ups
    assert contrast_pairs(logits, torch.tensor([1, 0])).tolist() == [[1, 0], [0, 1]]  # best other class
    # a given class for every image, except where it is c itself: the runner-up stands in
    assert contrast_pairs(logits, torch.tensor([0, 1]), contrast=1).tolist() == [[0, 1], [1, 2]]
    with pytest.raises(ValueError, match="3-class"):
        contrast_pairs(logits, torch.tensor([0, 1]), contrast=3)


def test_classes_to_explain_in_every_class_mode(cnn):
    images, labels = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    logits = cnn(images)
    top2 = logits.topk(2).indices
    assert torch.equal(cnn.classes_to_explain(images, labels, "predicted"), top2[:, 0])
    assert torch.equal(cnn.classes_to_explain(images, labels, "target"), labels)
    assert torch.equal(cnn.classes_to_explain(images, labels, "contrastive"), top2)
    assert torch.equal(cnn.classes_to_explain(images, labels, "contrastive_target"), contrast_pairs(logits, labels))
    assert cnn.classes_to_explain(images, labels, "contrastive", contrast=5)[:, 1].tolist() == [
        5 if c != 5 else r for c, r in top2.tolist()]
    with pytest.raises(ValueError, match="contrastive_target"):
        cnn.classes_to_explain(images, labels, "runner_up")


# --- the loss -------------------------------------------------------------------------------------

def test_two_class_loss_is_cross_entropy_over_the_pair(cnn):
    images = torch.rand(3, 3, 64, 64)
    coarse = torch.rand(3, 1, 8, 8)
    masks = Masks(F.interpolate(coarse, size=64, mode="bilinear"), coarse)
    pairs = torch.tensor([[0, 1], [4, 2], [7, 3]])
    terms = LTXLoss(mask_weight=2.0, inv_weight=0.5)(cnn, ConstantBaseline(), images, masks, pairs)
    logits = cnn(images * masks.mask)
    two = torch.stack([logits[torch.arange(3), pairs[:, 0]], logits[torch.arange(3), pairs[:, 1]]], dim=1)
    assert torch.allclose(terms["pred"], F.cross_entropy(two, torch.zeros(3, dtype=torch.long), reduction="none"),
                          atol=1e-6)
    assert torch.allclose(terms["pred"], F.softplus(two[:, 1] - two[:, 0]), atol=1e-6)  # −log σ(l_c − l_c′)
    # the pair's loss ignores every other class: it differs from the pointwise CE of c
    assert not torch.allclose(terms["pred"], F.cross_entropy(logits, pairs[:, 0], reduction="none"))
    inverse = cnn(images * (1 - masks.mask)).gather(1, pairs)
    assert torch.allclose(terms["inv"], -torch.log1p(-torch.sigmoid(inverse[:, 0] - inverse[:, 1])), atol=1e-5)
    assert torch.allclose(terms["loss"], terms["pred"] + 2.0 * terms["mask"] + 0.5 * terms["inv"])


# --- methods --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ig", "gradient_x_input"])
def test_contrastive_attribution_is_the_difference_of_the_two_classes(cnn, name):
    """IG and gradient × input are linear in the output they attribute: c vs c′ is c minus c′."""
    method = create_method(name, cnn, **({"n_steps": 8} if name == "ig" else {}))
    images, pairs = torch.rand(2, 3, 64, 64), torch.tensor([[1, 3], [6, 0]])
    difference = method.attributions(images, pairs[:, 0]) - method.attributions(images, pairs[:, 1])
    contrastive = method.attributions(images, pairs)
    assert torch.allclose(contrastive, difference, atol=1e-5 * difference.abs().max())
    assert not torch.allclose(contrastive, method.attributions(images, pairs[:, 0]))


def test_contrastive_saliency_is_the_gradient_of_the_difference(cnn):
    method = create_method("saliency", cnn)
    images, pairs = torch.rand(2, 3, 64, 64), torch.tensor([[1, 3], [6, 0]])
    gradient = [_attribute(method.attribution, images, classes, abs=False) for classes in (pairs[:, 0], pairs[:, 1])]
    assert torch.allclose(_attribute(method.attribution, images, pairs, abs=False), gradient[0] - gradient[1],
                          atol=1e-6)
    assert torch.allclose(method(images, pairs), (gradient[0] - gradient[1]).abs().amax(1), atol=1e-6)


def test_contrastive_idgi_is_complete_for_the_difference(cnn):
    """IDGI is not linear in the output, but its attributions sum to f_c − f_c′ at x minus at black."""
    images, pairs = torch.rand(2, 3, 64, 64), torch.tensor([[1, 3], [6, 0]])
    total = create_method("idgi", cnn, n_steps=8).attributions(images, pairs).sum((1, 2, 3))
    expected = class_score(cnn(images), pairs) - class_score(cnn(torch.zeros_like(images)), pairs)
    assert torch.allclose(total, expected, atol=1e-4)


def test_methods_that_cannot_explain_a_pair_refuse_it():
    vit = tiny_explained("ltx_textures_vit")
    images, pairs = torch.rand(2, 3, 64, 64), torch.tensor([[1, 3], [6, 0]])
    for name in ("rollout", "transformer_attribution"):
        method = create_method(name, vit)
        with pytest.raises(MethodNotApplicable, match="contrastive"):
            method(images, pairs)
        with pytest.raises(MethodNotApplicable, match="contrastive"):
            type(method).check_class_mode("contrastive_target")
        type(method).check_class_mode("target")
    for name in ("gae", "gradcam", "layercam", "rise", "random"):
        maps = create_method(name, vit, **({"num_masks": 16} if name == "rise" else {}))(images, pairs)
        assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all()


def test_explain_module_explains_and_saves_pairs(cnn, tmp_path):
    images, labels = torch.rand(3, 3, 64, 64), torch.tensor([0, 1, 2])
    batch = {"image": images, "label": labels, "index": torch.tensor([4, 5, 6])}
    out = ExplainModule(create_method("saliency", cnn), class_mode="contrastive").predict_step(batch)
    assert torch.equal(out["classes"], cnn.logits(images).topk(2).indices)
    assert torch.equal(out["maps"], create_method("saliency", cnn)(images, out["classes"]))
    store, key = MapStore(tmp_path), MapKey("cnn", "saliency", "contrastive")
    store.write(key, out)
    found, classes, maps = SavedMaps(store, key).get(torch.tensor([5, 9]))
    assert found.tolist() == [True, False] and classes.tolist() == [out["classes"][1].tolist(), [-1, -1]]
    # the other contrastive mode reuses a saved map where it explains the same pair, and only there
    reusing = ExplainModule(create_method("saliency", cnn), class_mode="contrastive_target",
                            reuse=SavedMaps(store, key))
    again = reusing.predict_step(batch)
    same = (again["classes"] == out["classes"]).all(1)
    assert reusing.reused == int(same.sum()) and torch.equal(again["maps"][same], out["maps"][same])


def test_ltx_finetunes_pairs_instance_batched_as_one_by_one(cnn):
    torch.manual_seed(0)
    method = LTX(cnn, build_explainer(cnn), ConstantBaseline(), LTXLoss(mask_weight=5.0), steps=3, lr=1e-3,
                 select_by="pos")
    images, pairs = torch.rand(3, 3, 64, 64), torch.tensor([[1, 2], [2, 7], [7, 1]])
    together = method.explanations(images, pairs)
    alone = [method.explanations(images[i:i + 1], pairs[i:i + 1]) for i in range(3)]
    assert torch.allclose(together["maps"], torch.cat([a["maps"] for a in alone]), atol=1e-5)
    assert torch.equal(together["step"], torch.cat([a["step"] for a in alone]))


# --- metrics --------------------------------------------------------------------------------------

class Regions(nn.Module):
    """Logits of 10×10 images from the mean brightness of three row bands: S (rows 0-2) is evidence for
    classes 0 and 1 alike, A (rows 3-4) for class 0 only, B (rows 5-6) for class 1 only. On a white
    image c = 0 wins (5 against 4.5) and its runner-up c′ is 1; class 2 stays at 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = x.mean(1)
        s, a, b = bands[:, 0:3].mean((1, 2)), bands[:, 3:5].mean((1, 2)), bands[:, 5:7].mean((1, 2))
        return torch.stack([3 * s + 2 * a, 3 * s + b + 0.5, torch.zeros_like(s)], dim=1)


def test_evidence_for_c_alone_beats_evidence_for_both_on_the_contrastive_suite():
    """A map of what tells c from c′ (band A) against one that ranks the evidence c shares with c′
    (band S) first: the first is better on all four contrastive metrics."""
    images, labels = torch.ones(2, 3, 10, 10), torch.zeros(2, dtype=torch.long)
    c_only, both = torch.zeros(2, 10, 10), torch.zeros(2, 10, 10)
    c_only[:, 3:5] = 1
    both[:, 3:5], both[:, 0:3] = 1, 2
    suite = {name: create_metric(name, Regions()) for name in CONTRASTIVE}
    for name, metric in suite.items():
        better, worse = metric.per_image(images, c_only, labels), metric.per_image(images, both, labels)
        assert ((better < worse) if name in ("contrastive_pos", "contrastive_del") else (better > worse)).all(), name


def test_contrastive_curves_by_hand():
    images, labels = torch.ones(1, 3, 10, 10), torch.zeros(1, dtype=torch.long)
    c_only = torch.zeros(1, 10, 10)
    c_only[:, 3:5] = 1
    hits = create_metric("contrastive_pos", Regions()).curves(images, c_only, labels)
    # A's 20 pixels go first: half of A at 10 % (4 against 4.5), all of it at 20 % (3 against 4.5)
    assert hits[0].tolist() == [1.0] + [0.0] * 9
    probs = create_metric("contrastive_del", Regions()).curves(images, c_only, labels)
    assert torch.allclose(probs[0, :3], torch.sigmoid(torch.tensor([0.5, -0.5, -1.5])))


def test_contrastive_metrics_batched_equal_one_by_one_and_share_the_paper_suites_runs(cnn):
    images, labels = torch.rand(5, 3, 64, 64), torch.tensor([0, 1, 2, 3, 4])
    maps = torch.rand(5, 8, 8)
    metrics = {name: create_metric(name, cnn, chunk_size=7) for name in CONTRASTIVE + ["pos", "neg", "ins", "del"]}
    suite = PerturbationSuite(metrics)
    assert sorted(map(sorted, suite.runs(64, 64))) == [["contrastive_del", "contrastive_pos", "del", "pos"],
                                                       ["contrastive_ins", "contrastive_neg", "ins", "neg"]]
    assert suite.passes_per_run(64, 64) == [10, 10]
    together = suite.curves(images, maps, labels)
    for name in CONTRASTIVE:
        alone = torch.cat([create_metric(name, cnn).curves(images[i:i + 1], maps[i:i + 1], labels[i:i + 1])
                           for i in range(5)])
        assert torch.allclose(together[name], alone, atol=1e-6), name
    # POS scored on the pairs themselves (LTX's selection in a contrastive mode) is the contrastive POS
    pairs = contrast_pairs(cnn(images), labels)
    assert torch.allclose(metrics["pos"].curves(images, maps, pairs), together["contrastive_pos"], atol=1e-6)


def test_a_given_contrast_class_and_the_clean_first_step_are_required():
    model = Regions()
    images, labels, maps = torch.ones(1, 3, 10, 10), torch.zeros(1, dtype=torch.long), torch.rand(1, 10, 10)
    against_2 = create_metric("contrastive_pos", model, contrast=2).curves(images, maps, labels)
    assert against_2.tolist() == [[1.0] * 10]  # class 2 stays at 0: c (>= 0) never falls behind it
    with pytest.raises(ValueError, match="start at 0.0"):
        create_metric("contrastive_pos", model, fractions=[0.1, 0.5])


# --- config ---------------------------------------------------------------------------------------

def test_config_composes_with_the_contrastive_class_modes(cnn):
    cfg = compose_config(["+experiment=contrastive"])
    assert list(cfg.class_modes) == ["predicted", "contrastive"] and cfg.contrast_class is None
    check_config(cfg)
    metrics = build_metrics(cfg.eval, cnn)
    assert set(metrics) == {*CONTRASTIVE, "pos", "neg", "ins", "del"}
    cfg = compose_config(["class_modes=[contrastive_target]", "contrast_class=3", "eval=contrastive"])
    check_config(cfg)
    assert all(metrics.contrast == 3 for name, metrics in build_metrics(cfg.eval, cnn).items() if name in CONTRASTIVE)
    with pytest.raises(ValueError, match="contrastive_target"):
        check_config(compose_config(["class_modes=[runner_up]"]))
    with pytest.raises(ValueError, match="contrast_class"):
        check_config(compose_config(["contrast_class=-1"]))


def test_a_run_explains_pairs_with_the_methods_that_can_and_skips_the_others(tmp_path, caplog):
    overrides = tiny_vit("explain.num_images=4", "class_modes=[predicted,contrastive]", "method=[saliency,rollout]",
                         "eval=contrastive", f"paths.output_dir={tmp_path}")
    cfg = compose_config([o for o in overrides if not o.startswith("method.ltx.")])
    _, instances = prepare_data(cfg)
    explained, store = tiny_explained("ltx_textures_vit"), MapStore(tmp_path / "maps")
    with caplog.at_level(logging.INFO, logger="ltx.stages.explain"):
        explain_instances(cfg, store, "vit", explained, {mode: (None, None) for mode in cfg.class_modes}, instances)
    assert sorted(map(str, store.keys())) == ["vit/rollout/predicted", "vit/saliency/contrastive",
                                              "vit/saliency/predicted"]
    assert "maps vit/rollout/contrastive: skipped" in caplog.text
    pairs = store.load(MapKey("vit", "saliency", "contrastive"))["classes"]
    assert pairs.shape == (4, 2) and (pairs[:, 0] != pairs[:, 1]).all()
    result = Evaluation()
    evaluate(cfg, store, "vit", explained, instances, result)
    scored = {(row["method"], row["class_mode"], row["metric"]) for row in result.rows}
    assert {(m, c, n) for m, c in [("saliency", "contrastive"), ("rollout", "predicted")] for n in CONTRASTIVE} <= scored

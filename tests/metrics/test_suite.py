"""PerturbationSuite: one run per plan in any metric order, each metric's own values bit for bit,
and nothing kept between calls."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch import nn

from ltx.metrics import METRICS, PERTURBATION_METRICS, PerturbationSuite, create_metric
from ltx.metrics.road import ROAD_METRICS

SIZE, BATCH, STEPS = 8, 4, 10


class CountingModel(nn.Module):
    """A linear classifier on 8×8 images (with the normalisation mean RISE needs) that counts the
    images it is run on."""

    def __init__(self, seed: int = 0, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(3 * SIZE * SIZE, classes)
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.images_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images_seen += x.shape[0]
        return self.linear(x.flatten(1))


def batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=generator)
    saliency = torch.rand(BATCH, SIZE, SIZE, generator=generator)
    return images, saliency, torch.randint(0, 5, (BATCH,), generator=generator)


def assert_same_state(alone: nn.Module, together: nn.Module) -> None:
    curves = hasattr(alone, "compute_curve")
    for value in ("compute", "compute_curve", "compute_per_image") if curves else ("compute",):
        assert torch.equal(getattr(alone, value)(), getattr(together, value)()), (alone.name, value)


@pytest.mark.parametrize("order", [("pos", "neg", "ins", "del"), ("del", "ins", "neg", "pos"),
                                   ("pos", "del", "neg", "ins"), ("ins", "pos", "neg", "del")])
def test_the_paper_suite_runs_once_per_order_with_each_metrics_own_values(order: tuple[str, ...]) -> None:
    model = CountingModel()
    images, saliency, labels = batch(0)
    suite = PerturbationSuite({name: create_metric(name, model) for name in order})
    assert {frozenset(names) for names in suite.runs(SIZE, SIZE)} == {frozenset({"pos", "del"}),
                                                                     frozenset({"neg", "ins"})}
    assert suite.passes_per_run(SIZE, SIZE) == [STEPS, STEPS]
    suite.update(images, saliency, labels)
    assert model.images_seen == 2 * BATCH * STEPS  # one run per removal order
    for name in order:
        alone = create_metric(name, model)
        alone.update(images, saliency, labels)
        assert_same_state(alone, suite.metrics[name])
    assert model.images_seen == (2 + 4) * BATCH * STEPS  # alone, every metric makes its own run
    assert list(suite.compute()) == list(order)


def test_curves_are_each_metrics_own_curves_with_one_run_per_plan() -> None:
    model = CountingModel()
    images, saliency, labels = batch(1)
    names = [*PERTURBATION_METRICS, *ROAD_METRICS]
    metrics = {name: create_metric(name, model, **({"step": 16} if "rise" in name else {})) for name in names}
    suite = PerturbationSuite(metrics)
    # POS/DEL, NEG/INS, each RISE metric (other endpoints), ROAD MoRF, ROAD LeRF
    rise = SIZE * SIZE // 16 + 1
    assert suite.passes_per_run(SIZE, SIZE) == [STEPS, STEPS, rise, rise, STEPS, STEPS]
    curves = suite.curves(images, saliency, labels)
    assert model.images_seen == BATCH * (4 * STEPS + 2 * rise + 2)  # + RISE's originals, once per metric
    assert list(curves) == names
    for name, metric in metrics.items():
        assert not curves[name].is_inference()
        assert torch.equal(curves[name], metric.curves(images, saliency, labels)), name
        assert metric.update_count == 0  # `curves` leaves the states alone


def test_road_pairs_share_a_run_never_with_black_pixels_or_other_settings() -> None:
    model = CountingModel()
    images, saliency, labels = batch(2)
    specs = {name: (name, {}) for name in ("pos", "road_morf_acc", "del", "road_morf_prob")}
    specs["road_morf_prob_seed1"] = ("road_morf_prob", {"seed": 1})
    specs.update({name: (name, {}) for name in ("road_lerf_prob", "road_lerf_acc")})
    suite = PerturbationSuite({key: create_metric(name, model, **kw) for key, (name, kw) in specs.items()})
    suite.update(images, saliency, labels)
    assert model.images_seen == 4 * BATCH * STEPS  # POS/DEL, ROAD MoRF, ROAD MoRF seed 1, ROAD LeRF
    for key, (name, kwargs) in specs.items():
        alone = create_metric(name, model, **kwargs)
        alone.update(images, saliency, labels)
        assert_same_state(alone, suite.metrics[key])
    pos, road = (suite.metrics[key].compute_per_image() for key in ("pos", "road_morf_acc"))
    assert not torch.equal(pos, road)


def test_metrics_of_other_models_or_chunk_sizes_make_their_own_runs() -> None:
    first, second = CountingModel(), CountingModel(seed=1)
    suite = PerturbationSuite({"pos": create_metric("pos", first), "del": create_metric("del", second),
                               "del_chunked": create_metric("del", first, chunk_size=7)})
    suite.update(*batch(3))
    assert len(suite.runs(SIZE, SIZE)) == 3
    assert (first.images_seen, second.images_seen) == (2 * BATCH * STEPS, BATCH * STEPS)


def test_nothing_is_kept_between_calls() -> None:
    model = CountingModel()
    suite = PerturbationSuite({name: create_metric(name, model) for name in ("pos", "neg", "ins", "del")})
    first, second = batch(4), batch(5)
    before = suite.curves(*first)
    again = suite.curves(*first)  # the same tensors: run again all the same
    assert model.images_seen == 2 * 2 * BATCH * STEPS
    assert all(torch.equal(before[name], again[name]) for name in before)
    first[1].neg_()  # in place: the same tensor, the other order
    with torch.no_grad():
        model.linear.weight.mul_(-1)  # in place: the same model, other weights
    for images, saliency, labels in (first, second):
        curves = suite.curves(images, saliency, labels)
        for name in curves:
            fresh = create_metric(name, model).curves(images.clone(), saliency.clone(), labels)
            assert torch.equal(curves[name], fresh), name
    held = (torch.Tensor, list, dict, set, weakref.ref)
    classes = {cls for metric in METRICS.values() for cls in metric.__mro__
               if cls.__module__.startswith("ltx.")}
    for cls in classes | {PerturbationSuite}:
        assert not [name for name, value in vars(cls).items()
                    if isinstance(value, held) and not name.startswith("__")], cls


def test_update_gives_other_metrics_their_own_update_and_takes_curves_scored_before() -> None:
    model = CountingModel()
    images, saliency, labels = batch(6)
    masks = torch.zeros(BATCH, SIZE, SIZE, dtype=torch.bool)
    masks[:, 2:5, 3:6] = True
    names = ("pointing_game", "pos", "gt_auroc", "del")
    suite, given = (PerturbationSuite({name: create_metric(name, model) for name in names}) for _ in range(2))
    curves = suite.curves(images, saliency, labels)
    given.update(images, saliency, labels, gt_masks=masks, curves=curves)
    assert model.images_seen == BATCH * STEPS  # `curves` ran POS/DEL once, `given.update` nothing
    suite.update(images, saliency, labels, gt_masks=masks)
    for name in names:
        alone = create_metric(name, model)
        alone.update(images, saliency, labels, gt_masks=masks)
        assert_same_state(alone, suite.metrics[name])
        assert_same_state(alone, given.metrics[name])
    suite.reset()
    assert all(metric.update_count == 0 for metric in suite.metrics.values())

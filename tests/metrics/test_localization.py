"""Localization metrics on hand-checkable maps and masks."""

from __future__ import annotations

import pytest
import torch

from ltx.metrics import EnergyPointingGame, MaskAUROC, PointingGame, create_metric


def value(metric, saliency: torch.Tensor, masks: torch.Tensor) -> float:
    metric.update(None, saliency, None, gt_masks=masks)
    return float(metric.compute())


def square_mask(top: int, left: int, side: int = 2, size: int = 4) -> torch.Tensor:
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, top:top + side, left:left + side] = True
    return mask


# --- pointing game -------------------------------------------------------------------------------

def peak_map(row: int, col: int, size: int = 6) -> torch.Tensor:
    s = torch.rand(1, size, size, generator=torch.Generator().manual_seed(0)) * 0.5
    s[0, row, col] = 1.0
    return s


def test_pointing_game_hit_and_miss() -> None:
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 1:3, 2:5] = True
    assert value(PointingGame(), peak_map(2, 3), mask) == 1.0
    assert value(PointingGame(), peak_map(5, 0), mask) == 0.0
    both = PointingGame()
    assert value(both, torch.cat([peak_map(2, 3), peak_map(5, 0)]), mask.expand(2, -1, -1)) == 0.5


def test_pointing_game_tolerance_is_euclidean_pixels() -> None:
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 0, 0] = True
    s = peak_map(1, 1)  # √2 from the mask pixel
    assert value(PointingGame(), s, mask) == 0.0
    assert value(PointingGame(tolerance=1), s, mask) == 0.0
    assert value(PointingGame(tolerance=1.5), s, mask) == 1.0


def test_pointing_game_ties_go_to_the_first_pixel() -> None:
    constant = torch.ones(1, 4, 4)
    assert value(PointingGame(), constant, square_mask(0, 0)) == 1.0
    assert value(PointingGame(), constant, square_mask(2, 2)) == 0.0


def test_pointing_game_upsamples_the_map_to_the_mask() -> None:
    low = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])  # bottom-right peak at any resolution
    assert value(PointingGame(), low, square_mask(6, 6, side=2, size=8)) == 1.0
    assert value(PointingGame(), low, square_mask(0, 0, side=2, size=8)) == 0.0


# --- energy pointing game ----------------------------------------------------------------------------

def test_energy_share_after_min_normalisation() -> None:
    mask = square_mask(0, 0)  # 4 of 16 pixels
    s = torch.ones(1, 4, 4)   # 8 pixels at 1 (the minimum), 4 at 2 outside, 4 at 3 inside
    s[0, 2:, :2] = 2.0
    s[0, :2, :2] = 3.0
    expected = (2.0 * 4) / (2.0 * 4 + 1.0 * 4)
    for scaled in (s, s * 1000 + 5, s.double(), s.long()):
        assert value(EnergyPointingGame(), scaled, mask) == pytest.approx(expected)


def test_energy_of_perfect_and_constant_maps() -> None:
    mask = square_mask(1, 1)
    assert value(EnergyPointingGame(), mask.float(), mask) == pytest.approx(1.0)
    assert value(EnergyPointingGame(), (~mask).float(), mask) == pytest.approx(0.0)
    assert value(EnergyPointingGame(), torch.full((1, 4, 4), 7.0), mask) == pytest.approx(4 / 16)


# --- mask AUROC --------------------------------------------------------------------------------------

def test_auroc_perfect_reversed_constant() -> None:
    mask = square_mask(1, 1)
    assert value(MaskAUROC(), mask.float(), mask) == pytest.approx(1.0)
    assert value(MaskAUROC(), -mask.float(), mask) == pytest.approx(0.0)
    assert value(MaskAUROC(), torch.zeros(1, 4, 4), mask) == pytest.approx(0.5)


def test_auroc_hand_computed_with_ties() -> None:
    """Scores (positives 1, 2; negatives 1, 0): pairs (1,1) ½, (1,0) 1, (2,1) 1, (2,0) 1 → 3.5 / 4."""
    s = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])
    mask = torch.tensor([[[True, False], [True, False]]])
    assert value(MaskAUROC(), s, mask) == pytest.approx(0.875)
    s = torch.tensor([[[0.1, 0.4], [0.35, 0.8]]])  # sklearn's roc_auc_score example: 0.75
    mask = torch.tensor([[[False, False], [True, True]]])
    assert value(MaskAUROC(), s, mask) == pytest.approx(0.75)


def test_auroc_matches_pairwise_count_on_random_maps() -> None:
    g = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 5, (3, 6, 6), generator=g).float()
    masks = torch.rand(3, 6, 6, generator=g) > 0.6
    expected = []
    for s, m in zip(maps.flatten(1), masks.flatten(1)):
        pos, neg = s[m], s[~m]
        diff = pos[:, None] - neg[None, :]
        expected.append(float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean()))
    assert value(MaskAUROC(), maps, masks) == pytest.approx(sum(expected) / 3)


# --- shared behaviour --------------------------------------------------------------------------------

def test_unscorable_masks_are_skipped() -> None:
    empty, full = torch.zeros(1, 4, 4, dtype=torch.bool), torch.ones(1, 4, 4, dtype=torch.bool)
    mask = square_mask(0, 0)
    s = mask.float().expand(3, -1, -1)
    masks = torch.cat([mask, empty, full])
    pointing = PointingGame()
    assert value(pointing, s, masks) == 1.0 and int(pointing.count) == 2
    auroc = MaskAUROC()
    assert value(auroc, s, masks) == 1.0 and int(auroc.count) == 1


@pytest.mark.parametrize("name", ["pointing_game", "energy_pointing_game", "gt_auroc"])
def test_uniform_construction_and_update(name: str) -> None:
    metric = create_metric(name, torch.nn.Identity())
    assert metric.higher_is_better is True
    images, labels = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, 2:5, 2:5] = 1.0
    metric.update(images, masks[:, 0] * 3, labels, gt_masks=masks)
    assert float(metric.compute()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="gt_masks"):
        metric.update(images, masks[:, 0], labels)

"""What every generated data set promises, checked on each (shapes, textures): a sample is a pure
function of (seed, index), the stored items are the renderer's, and the DataModule's splits are
disjoint and lazily built."""

from __future__ import annotations

import pytest
import torch

from ltx.data import ShapesDataModule, TexturesDataModule
from ltx.data.datamodule import _GeneratedDataModule

DATAMODULES = [ShapesDataModule, TexturesDataModule]


@pytest.fixture(params=DATAMODULES, ids=lambda cls: cls.dataset_class.__name__)
def datamodule_class(request) -> type[_GeneratedDataModule]:
    return request.param


def test_sample_depends_only_on_seed_and_index(datamodule_class):
    render = datamodule_class.dataset_class.render
    images, masks, labels = render(range(120), seed=7)
    picked = torch.tensor([110, 3, 77, 3, 0])  # another batch: other order, other size, a repeat
    images2, masks2, labels2 = render(picked, seed=7)
    assert torch.equal(images2, images[picked]) and torch.equal(masks2, masks[picked])
    assert torch.equal(labels2, labels[picked])
    for index in (77, 110):
        single, single_mask, _ = render([index], seed=7)
        assert torch.equal(single[0], images[index]) and torch.equal(single_mask[0], masks[index])
    other, _, _ = render(range(10), seed=8)
    assert not torch.equal(other, images[:10])


def test_dataset_items_match_the_renderer(datamodule_class):
    dataset_class = datamodule_class.dataset_class
    dataset = dataset_class(20, seed=1, offset=100, image_size=32, num_classes=4, distractors=(0, 1))
    assert len(dataset) == 20 and dataset.class_names == dataset_class.classes[:4]
    assert dataset.num_classes == 4 and dataset.image_size == 32
    images, masks, labels = dataset_class.render(range(100, 120), seed=1, image_size=32, num_classes=4,
                                                 distractors=(0, 1))
    assert torch.equal(dataset.labels, labels)
    item = dataset[5]
    assert set(item) == {"image", "label", "mask", "index"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
    assert (item["image"] - images[5]).abs().max() <= 0.5 / 255 + 1e-6  # stored as uint8
    assert torch.equal(item["mask"], masks[5])
    assert item["label"].dtype == torch.int64 and item["label"] == labels[5]
    assert item["index"].dtype == torch.int64 and item["index"] == 105


def test_datamodule_batches_and_disjoint_splits(datamodule_class):
    data = datamodule_class(train_size=40, val_size=12, test_size=12, image_size=32, num_classes=5, batch_size=8)
    assert data.train_set is None  # nothing is rendered before setup
    data.setup()
    assert data.has_masks and data.num_classes == 5
    assert data.class_names == datamodule_class.dataset_class.classes[:5]
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (40, 12, 12)
    seen = {}
    for split, loader in [
        ("train", data.train_dataloader()),
        ("val", data.val_dataloader()),
        ("test", data.test_dataloader()),
    ]:
        batch = next(iter(loader))
        assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.float32
        assert batch["mask"].shape == (8, 32, 32)
        assert batch["label"].shape == (8,) and batch["label"].max() < 5
        seen[split] = set(torch.cat([b["index"] for b in loader]).tolist())
    assert not (seen["train"] & seen["val"] or seen["train"] & seen["test"] or seen["val"] & seen["test"])
    assert [len(seen[s]) for s in ("train", "val", "test")] == [40, 12, 12]
    with pytest.raises(ValueError, match="split sizes"):
        datamodule_class(train_size=-1)

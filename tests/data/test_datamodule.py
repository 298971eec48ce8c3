"""DataModules: lazy setup, one batch from every loader, disjoint splits, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from ltx.data import ImageFolderDataModule, ShapesDataModule


def test_shapes_train_order_is_seeded():
    def first_indices(seed: int) -> list[int]:
        data = ShapesDataModule(
            train_size=32, val_size=0, test_size=0, image_size=16, batch_size=32, seed=seed
        )
        data.setup("fit")
        return next(iter(data.train_dataloader()))["index"].tolist()

    assert first_indices(0) == first_indices(0) != first_indices(1)


def test_val_and_test_do_not_depend_on_train_size():
    small = ShapesDataModule(train_size=4, val_size=6, test_size=2, image_size=16)
    large = ShapesDataModule(train_size=8, val_size=6, test_size=2, image_size=16)
    small.setup("validate")
    large.setup("validate")
    assert small.train_set is None  # only what the stage needs is built
    assert torch.equal(small.val_set.images, large.val_set.images)


@pytest.fixture
def imagenet_like(tmp_path: Path) -> Path:
    for split, per_class in (("train", 3), ("val", 2)):
        for label, name in enumerate(("n01", "n02")):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (30 + i, 20), (label * 200, 0, 0)).save(folder / f"{i}.JPEG")
    return tmp_path


def test_image_folder_datamodule(imagenet_like):
    data = ImageFolderDataModule(root=str(imagenet_like), image_size=16, batch_size=4)
    data.setup()
    assert not data.has_masks and data.class_names == ("n01", "n02") and data.num_classes == 2
    assert (len(data.train_set), len(data.val_set)) == (6, 4)
    assert data.test_set is data.val_set  # test_dir defaults to val_dir
    for loader in (data.train_dataloader(), data.val_dataloader(), data.test_dataloader()):
        batch = next(iter(loader))
        assert batch["image"].shape == (4, 3, 16, 16) and "mask" not in batch
        assert batch["label"].dtype == torch.int64


def test_image_folder_datamodule_errors(imagenet_like):
    missing = imagenet_like / "missing"
    with pytest.raises(FileNotFoundError) as error:
        ImageFolderDataModule(root=str(missing)).setup()
    assert str(missing) in str(error.value) and "data.root=" in str(error.value)
    with pytest.raises(FileNotFoundError, match="data.test_dir=") as error:
        ImageFolderDataModule(root=str(imagenet_like), test_dir="test").setup("test")
    assert str(imagenet_like / "test") in str(error.value)

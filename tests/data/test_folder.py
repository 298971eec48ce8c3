"""ImageFolder loading (modes, sizes, errors) and seeded subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ltx.data.folder import ImageFiles, ImageFolderDataset, ImageSource, find_images, seeded_subset
from ltx.data.shapes import ShapesDataset


def _gradient(width: int, height: int) -> np.ndarray:
    return np.linspace(0, 1, width * height).reshape(height, width)


@pytest.fixture
def image_root(tmp_path: Path) -> Path:
    """Three classes, images of several sizes and PIL modes (as found in real data sets)."""
    root = tmp_path / "images"
    for name in ("ant", "bee", "cat"):
        (root / name).mkdir(parents=True)
    ramp = _gradient(40, 30)
    Image.fromarray((np.stack([ramp] * 3, -1) * 255).astype(np.uint8), "RGB").save(root / "ant" / "rgb.jpg")
    Image.fromarray((ramp * 255).astype(np.uint8), "L").save(root / "ant" / "gray.PNG")
    Image.new("RGBA", (20, 50), (255, 0, 0, 128)).save(root / "bee" / "rgba.png")
    Image.fromarray((_gradient(33, 17) * 65535).astype(np.uint16)).save(root / "bee" / "deep.png")  # I;16
    palette = Image.new("P", (16, 16), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.save(root / "cat" / "pal.bmp")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_labels_sizes_and_modes(image_root):
    dataset = ImageFolderDataset(image_root, image_size=24)
    assert dataset.class_names == ("ant", "bee", "cat") and dataset.num_classes == 3
    assert dataset.labels.tolist() == [0, 0, 1, 1, 2]  # the .txt file is ignored
    for i in range(len(dataset)):
        item = dataset[i]
        assert set(item) == {"image", "label", "index"}
        pixels = item["image"]
        assert pixels.shape == (3, 24, 24) and pixels.dtype == torch.float32
        assert 0 <= pixels.min() and pixels.max() <= 1
        assert item["label"] == dataset.labels[i] and item["index"] == i

    def image(relative: str) -> torch.Tensor:
        return dataset[dataset.paths.index(image_root / relative)]["image"]

    deep = image("bee/deep.png")
    assert deep.max() > 0.9 and deep.min() < 0.1  # 16-bit values are rescaled, not clipped to white
    assert torch.equal(image("cat/pal.bmp"), torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand(3, 24, 24))
    assert torch.equal(image("bee/rgba.png"), torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1).expand(3, 24, 24))
    gray = image("ant/gray.PNG")
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[0], gray[2])


def test_class_names_fix_the_order(image_root):
    dataset = ImageFolderDataset(image_root, image_size=8, class_names=["cat", "ant"])
    assert dataset.labels.tolist() == [0, 1, 1]
    with pytest.raises(FileNotFoundError, match="dog"):
        ImageFolderDataset(image_root, class_names=["ant", "dog"])


def test_missing_root_says_what_to_do(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as error:
        ImageFolderDataset(missing)
    message = str(error.value)
    assert str(missing) in message and "data.root=" in message
    assert "<root>/<class_name>/<image>.JPEG" in message


def test_no_images_is_an_error(tmp_path):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataset(tmp_path)


def test_corrupt_image_names_the_file(image_root):
    bad = image_root / "ant" / "x.jpg"
    bad.write_bytes(b"\x00garbage" * 10)
    dataset = ImageFolderDataset(image_root)
    with pytest.raises(ValueError, match="cannot read image .*x.jpg"):
        dataset[dataset.paths.index(bad)]


def test_find_images_in_folders_globs_and_files(image_root):
    named = image_root / "ant" / "rgb.jpg"
    found = find_images([str(named), str(image_root), str(image_root / "*" / "*.png")])
    assert found[0] == ImageSource(named, named=True)  # given by name: its errors stop the run
    paths = [s.path for s in found]
    assert len(paths) == len(set(paths)) == 5  # each once; notes.txt is not an image
    assert all(not s.named for s in found[1:])  # found in a folder / by a glob: skipped if unreadable
    with pytest.raises(FileNotFoundError, match="image not found: .*nope.jpg.*glob patterns"):
        find_images([str(image_root / "nope.jpg")])
    with pytest.raises(FileNotFoundError, match="no images .* matching .*\\*.gif"):
        find_images([str(image_root / "*.gif")])
    (image_root / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images .* in the folder .*empty"):
        find_images([str(image_root / "empty")])


def test_image_files_convert_every_mode_to_rgb_at_model_size(image_root):
    paths = sorted(p for p in image_root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".bmp"))
    dataset = ImageFiles(paths, image_size=16, label=3)
    for i in range(len(dataset)):
        item = dataset[i]
        assert item["image"].shape == (3, 16, 16) and item["label"] == 3 and item["index"] == i
        assert 0 <= item["image"].min() and item["image"].max() <= 1


def test_seeded_subset_per_class(image_root):
    dataset = ImageFolderDataset(image_root)
    subset = seeded_subset(dataset, per_class=1, seed=3)
    assert sorted(dataset.labels[subset.indices].tolist()) == [0, 1, 2]
    assert subset.indices == seeded_subset(dataset, per_class=1, seed=3).indices
    with pytest.raises(ValueError, match="fewer than per_class"):
        seeded_subset(dataset, per_class=2)


def test_seeded_subset_on_shapes():
    dataset = ShapesDataset(200, seed=0, image_size=16)
    by_class = seeded_subset(dataset, per_class=2, seed=0)
    assert torch.bincount(dataset.labels[by_class.indices]).tolist() == [2] * 8
    picks = [seeded_subset(dataset, num_samples=50, seed=seed).indices for seed in (0, 0, 1)]
    assert picks[0] == picks[1] != picks[2]
    assert len(picks[0]) == len(set(picks[0])) == 50
    with pytest.raises(ValueError, match="exactly one"):
        seeded_subset(dataset, num_samples=5, per_class=1)

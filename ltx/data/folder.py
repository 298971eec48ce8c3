"""Real images: ImageFolder (ImageNet) layout, loose files / folders / globs (`ltx explain`), and
seeded subsets of any labelled data set.

Images are resized straight to image_size x image_size (bilinear, no centre crop), the paper's
protocol: the model sees, and the explanation covers, the whole picture.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
LAYOUT = "<root>/<class_name>/<image>.JPEG"


def find_classes(root: str | Path) -> list[str]:
    """Sorted class folder names under `root` (hidden folders skipped); checks that `root` exists."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {str(root)!r} not found: expected images as {LAYOUT}; "
            "set data.root=... to where the data set is"
        )
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def load_rgb(path: str | Path) -> Image.Image:
    """Open any PIL-readable image as 8-bit RGB; 16-bit grayscale is rescaled, not clipped."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode.startswith("I"):  # 'I;16*' (16-bit PNG) or 32-bit 'I' holding 16-bit values
                values = np.asarray(image, dtype=np.float64)
                scale = 255 if image.mode == "I" and values.max() <= 255 else 65535
                image = Image.fromarray(np.clip(values * (255 / scale) + 0.5, 0, 255).astype(np.uint8), "L")
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read image {path}: {err}. Replace or remove the file.") from err


def image_tensor(image: Image.Image, image_size: int) -> Tensor:
    """(3, image_size, image_size) float pixels in [0, 1] of an RGB image, resized straight (no crop)."""
    image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()


def _item(path: Path, image_size: int, label: Tensor, index: int) -> dict[str, Tensor]:
    return {"image": image_tensor(load_rgb(path), image_size), "label": label,
            "index": torch.tensor(index, dtype=torch.int64)}


class ImageFolderDataset(Dataset):
    """Images under root/<class_name>/ (searched recursively), labelled by class folder.

    Labels follow sorted folder names, or `class_names` when given (which fixes the order and
    may select a subset of the folders). Files are only listed here, never opened, so `labels` is
    cheap; a corrupt image fails when it is read, naming the file.
    """

    def __init__(
        self, root: str | Path, *, image_size: int = 224, class_names: Sequence[str] | None = None
    ) -> None:
        self.root, self.image_size = Path(root), int(image_size)
        found = find_classes(self.root)
        self.class_names: tuple[str, ...] = tuple(class_names) if class_names is not None else tuple(found)
        missing = sorted(set(self.class_names) - set(found))
        if missing:
            raise FileNotFoundError(
                f"class folders {missing[:5]}{' ...' if len(missing) > 5 else ''} not found in "
                f"{str(self.root)!r} (expected the layout {LAYOUT})"
            )
        self.paths: list[Path] = []
        labels: list[int] = []
        for label, name in enumerate(self.class_names):
            files = sorted(p for p in (self.root / name).rglob("*") if _is_image(p))
            self.paths += files
            labels += [label] * len(files)
        if not self.paths:
            raise FileNotFoundError(
                f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {str(self.root)!r}: "
                f"expected the layout {LAYOUT}"
            )
        self.labels = torch.tensor(labels, dtype=torch.int64)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return _item(self.paths[i], self.image_size, self.labels[i], i)


@dataclass(frozen=True)
class ImageSource:
    """An image to explain; `named`: given by its own name (unreadable: an error), not found in a
    folder or by a glob (unreadable: skipped with a warning)."""

    path: Path
    named: bool


def find_images(inputs: Sequence[str | Path]) -> list[ImageSource]:
    """The images that files, folders (searched recursively) and glob patterns name, each once, in order."""
    sources: dict[Path, ImageSource] = {}
    for item in map(str, inputs):
        path = Path(item).expanduser()
        if path.is_dir():
            found, named, what = sorted(p for p in path.rglob("*") if _is_image(p)), False, "in the folder"
        elif any(c in item for c in "*?["):
            found = sorted(p for p in map(Path, glob.glob(str(path), recursive=True)) if _is_image(p))
            named, what = False, "matching"
        elif path.is_file():
            found, named = [path], True
        else:
            raise FileNotFoundError(f"image not found: {item}. Give existing image files, folders or glob "
                                    "patterns (quoted, e.g. 'photos/*.jpg').")
        if not found:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) {what} {item}")
        for p in found:
            sources.setdefault(p.resolve(), ImageSource(p, named))
    return list(sources.values())


class ImageFiles(Dataset):
    """Loose image files as model inputs, every one with the same `label` (-1: none)."""

    def __init__(self, paths: Sequence[Path], *, image_size: int, label: int = -1) -> None:
        self.paths, self.image_size = list(paths), int(image_size)
        self.labels = torch.full((len(self.paths),), label, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return _item(self.paths[i], self.image_size, self.labels[i], i)


def dataset_labels(dataset: Dataset) -> Tensor:
    """The labels of a data set as a LongTensor, from its `labels` or `targets` attribute."""
    for name in ("labels", "targets"):
        if hasattr(dataset, name):
            return torch.as_tensor(getattr(dataset, name), dtype=torch.int64)
    raise TypeError(f"{type(dataset).__name__} has no `labels` or `targets` attribute to draw a subset from")


def seeded_subset(
    dataset: Dataset, *, num_samples: int | None = None, per_class: int | None = None, seed: int = 0
) -> Subset:
    """A reproducible random subset: `per_class` images of every class, or `num_samples` in all.

    E.g. the paper's one image per class for ImageNet evaluation, or its 2,000 random training
    images. Indices are sorted (class-grouped for `per_class`) so the subset reads in a stable order.
    """
    if (num_samples is None) == (per_class is None):
        raise ValueError("give exactly one of num_samples and per_class")
    labels = dataset_labels(dataset).numpy()
    rng = np.random.default_rng(seed)
    if num_samples is not None:
        if not 0 <= num_samples <= len(labels):
            raise ValueError(f"num_samples={num_samples} is not within the data set's {len(labels)} samples")
        return Subset(dataset, sorted(rng.choice(len(labels), size=num_samples, replace=False).tolist()))
    num_classes = getattr(dataset, "num_classes", None) or int(labels.max(initial=-1)) + 1
    picked: list[int] = []
    for label in range(num_classes):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(f"class {label} has {len(members)} samples, fewer than per_class={per_class}")
        picked += sorted(rng.choice(members, size=per_class, replace=False).tolist())
    return Subset(dataset, picked)


def instance_ids(dataset: Subset) -> list[int]:
    """The global instance index of each element of a subset (what batches carry as 'index'), without
    loading images."""
    base = dataset.dataset
    return [getattr(base, "offset", 0) + int(i) for i in dataset.indices]

"""Lightning DataModules for the generated data sets (shapes, textures) and for ImageFolder data sets.

All build their splits lazily, once (a split is only built when a stage or a loader needs it,
so evaluating on ImageNet val never lists the 1.3M training files), and share the loaders.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from ltx.data.folder import LAYOUT, ImageFolderDataset, find_classes
from ltx.data.render import GeneratedDataset
from ltx.data.shapes import ShapesDataset
from ltx.data.textures import TexturesDataset

SPLITS = ("train", "val", "test")
_STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


def backbone_image_size(*, _root_: DictConfig) -> int:
    """`${ltx.backbone_image_size:}`: the image size the run's backbones take, so that data read from
    disk (conf/data/imagenet.yaml) is resized to what the explained model was trained at unless
    `data.image_size` is set."""
    sizes = {name: spec.image_size for name, spec in _root_.backbone.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the backbones take images of different sizes ({sizes}): run them separately, or "
                         "set data.image_size=N and each backbone's image_size to N.")
    return int(next(iter(sizes.values())))


OmegaConf.register_new_resolver("ltx.backbone_image_size", backbone_image_size, replace=True)


class _SplitDataModule(L.LightningDataModule, ABC):
    """Lazy train/val/test data sets and their loaders; subclasses say how to build a split."""

    has_masks: ClassVar[bool]

    def __init__(self, *, image_size: int, batch_size: int, num_workers: int, seed: int) -> None:
        super().__init__()
        self.image_size, self.batch_size = int(image_size), int(batch_size)
        self.num_workers, self.seed = int(num_workers), int(seed)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @abstractmethod
    def _build(self, split: str) -> Dataset:
        """The data set of `split` (one of SPLITS)."""

    @property
    @abstractmethod
    def class_names(self) -> tuple[str, ...]:
        """Class names in label order."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def dataset(self, split: str) -> Dataset:
        """The data set of `split`, built on first use."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}, expected one of {SPLITS}")
        if getattr(self, f"{split}_set") is None:
            setattr(self, f"{split}_set", self._build(split))
        return getattr(self, f"{split}_set")

    def setup(self, stage: str | None = None) -> None:
        for split in _STAGE_SPLITS.get(stage or "", SPLITS):
            self.dataset(split)

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # seeded shuffling: a run's batch order is reproducible and differs between epochs
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class _GeneratedDataModule(_SplitDataModule):
    """A procedural data set (with ground-truth masks), rendered in memory; subclasses name its
    `dataset_class`.

    Each split is a fixed, disjoint range of generator indices, so val and test stay the same
    whatever train_size is, and runs with the same seed see the same images.
    """

    has_masks: ClassVar[bool] = True
    SPLIT_OFFSETS: ClassVar[dict[str, int]] = {"train": 0, "val": 10**9, "test": 2 * 10**9}
    dataset_class: ClassVar[type[GeneratedDataset]]

    def __init__(
        self,
        *,
        train_size: int = 10000,
        val_size: int = 1000,
        test_size: int = 1000,
        seed: int = 0,
        image_size: int = 64,
        num_classes: int = 8,
        distractors: Sequence[int] = (1, 3),
        batch_size: int = 128,
        num_workers: int = 0,
    ) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        self.sizes = {"train": int(train_size), "val": int(val_size), "test": int(test_size)}
        too_big = {split: size for split, size in self.sizes.items() if not 0 <= size <= 10**9}
        if too_big:
            raise ValueError(f"split sizes must be in 0..1e9 to keep the splits disjoint, got {too_big}")
        self._num_classes = int(num_classes)
        self.distractors = (int(distractors[0]), int(distractors[1]))

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.dataset_class.classes[: self._num_classes]

    def _build(self, split: str) -> GeneratedDataset:
        return self.dataset_class(
            self.sizes[split],
            seed=self.seed,
            offset=self.SPLIT_OFFSETS[split],
            image_size=self.image_size,
            num_classes=self._num_classes,
            distractors=self.distractors,
        )


class ShapesDataModule(_GeneratedDataModule):
    """The procedural shapes data: the class is the key object's shape (ltx.data.shapes)."""

    dataset_class = ShapesDataset


class TexturesDataModule(_GeneratedDataModule):
    """The procedural textures data: the class is the pattern inside the key object (ltx.data.textures)."""

    dataset_class = TexturesDataset


class ImageFolderDataModule(_SplitDataModule):
    """Real images in ImageFolder layout: <root>/<split_dir>/<class_name>/<image>.

    All splits share one class list (given, or the train folder's, else the val folder's), so a
    split that lacks a class folder fails loudly instead of silently shifting the labels.
    """

    has_masks: ClassVar[bool] = False

    def __init__(
        self,
        *,
        root: str,
        train_dir: str = "train",
        val_dir: str = "val",
        test_dir: str | None = None,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 0,
        class_names: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        self.root = Path(root)
        self.split_dirs = {"train": train_dir, "val": val_dir, "test": test_dir or val_dir}
        self._class_names = tuple(class_names) if class_names is not None else None

    def split_path(self, split: str) -> Path:
        """The folder of `split`, checked to exist with an error that says which setting to fix."""
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"data root {str(self.root)!r} not found: expected images as "
                f"{LAYOUT.replace('<root>', f'<root>/{self.split_dirs[split]}')}; set data.root=... to it"
            )
        path = self.root / self.split_dirs[split]
        if not path.is_dir():
            raise FileNotFoundError(
                f"{split} folder {str(path)!r} not found: expected images as {LAYOUT} under it; "
                f"set data.{split}_dir=... (a folder inside data.root={str(self.root)!r})"
            )
        return path

    @property
    def class_names(self) -> tuple[str, ...]:
        if self._class_names is None:
            train = self.root / self.split_dirs["train"]
            self._class_names = tuple(find_classes(train if train.is_dir() else self.split_path("val")))
        return self._class_names

    def _build(self, split: str) -> ImageFolderDataset:
        if split == "test" and self.split_dirs["test"] == self.split_dirs["val"]:
            return self.dataset("val")
        return ImageFolderDataset(
            self.split_path(split), image_size=self.image_size, class_names=self.class_names
        )

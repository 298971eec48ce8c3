"""Data: the procedural shapes set (with ground-truth masks), ImageFolder data sets, DataModules."""

from ltx.data.datamodule import ImageFolderDataModule, ShapesDataModule
from ltx.data.folder import ImageFolderDataset, seeded_subset
from ltx.data.shapes import SHAPE_CLASSES, ShapesDataset, render_shapes

__all__ = [
    "SHAPE_CLASSES",
    "ImageFolderDataModule",
    "ImageFolderDataset",
    "ShapesDataModule",
    "ShapesDataset",
    "render_shapes",
    "seeded_subset",
]

"""Data: the procedural shapes and textures sets (with ground-truth masks), ImageFolder data sets, DataModules."""

from ltx.data.datamodule import ImageFolderDataModule, ShapesDataModule, TexturesDataModule
from ltx.data.folder import ImageFolderDataset, instance_ids, seeded_subset
from ltx.data.shapes import SHAPE_CLASSES, ShapesDataset, render_shapes
from ltx.data.textures import TEXTURE_CLASSES, TexturesDataset, render_textures

__all__ = [
    "SHAPE_CLASSES",
    "TEXTURE_CLASSES",
    "ImageFolderDataModule",
    "ImageFolderDataset",
    "ShapesDataModule",
    "ShapesDataset",
    "TexturesDataModule",
    "TexturesDataset",
    "instance_ids",
    "render_shapes",
    "render_textures",
    "seeded_subset",
]

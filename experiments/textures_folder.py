"""Write generated textures images as an ImageFolder: ImageNet's layout at any size, without ImageNet.

    <root>/train/<class>/<index>.png   and   <root>/val/<class>/<index>.png

The images come from the embedded textures generator (`ltx.data.render_textures`), rendered at
`--size` px, the same number per class in each split, so the paper experiments' code path
(`data=imagenet`, timm ViT-B / ResNet-101 at 224 px) runs on real files offline:

    python experiments/textures_folder.py /tmp/textures224 --size 224 --train-per-class 2 --val-per-class 8
    python -m ltx.run +experiment=vit_b data.root=/tmp/textures224 backbone.vit_b.weights=random
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from ltx.data import TEXTURE_CLASSES, render_textures

SPLITS = ("train", "val")


def write_textures_folder(root: str | Path, *, size: int = 224, train_per_class: int = 2, val_per_class: int = 8,
                          num_classes: int = len(TEXTURE_CLASSES), seed: int = 0) -> Path:
    """Render `per_class` images of each of the first `num_classes` texture classes per split and
    write them as PNGs; train and val draw disjoint generator indices. Returns `root`."""
    root = Path(root)
    counts = {"train": train_per_class, "val": val_per_class}
    start = 0
    for split in SPLITS:
        wanted = {label: counts[split] for label in range(num_classes)}
        while any(wanted.values()):  # labels are drawn at random: render until every class has its count
            batch = 4 * sum(wanted.values())
            images, _, labels = render_textures(range(start, start + batch), seed=seed, image_size=size,
                                                num_classes=num_classes)
            for offset, (image, label) in enumerate(zip(images, labels.tolist())):
                if wanted[label]:
                    folder = root / split / TEXTURE_CLASSES[label]
                    folder.mkdir(parents=True, exist_ok=True)
                    pixels = (image.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(folder / f"{start + offset:06d}.png")
                    wanted[label] -= 1
            start += batch
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder to write (train/ and val/ are created inside)")
    parser.add_argument("--size", type=int, default=224, help="image side in px")
    parser.add_argument("--train-per-class", type=int, default=2)
    parser.add_argument("--val-per-class", type=int, default=8)
    parser.add_argument("--classes", type=int, default=len(TEXTURE_CLASSES), help="number of texture classes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = write_textures_folder(args.root, size=args.size, train_per_class=args.train_per_class,
                                 val_per_class=args.val_per_class, num_classes=args.classes, seed=args.seed)
    total = args.classes * (args.train_per_class + args.val_per_class)
    print(f"wrote {total} textures images of {args.size} px to {root}/{{train,val}}/<class>/")


if __name__ == "__main__":
    main()

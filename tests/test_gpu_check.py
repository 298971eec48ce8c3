"""experiments/gpu_check.sh: the GPU check's steps run on CPU with --smoke (so the script stays ready for
a GPU machine), and the textures ImageFolder it runs on."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from experiments.textures_folder import write_textures_folder
from ltx.data import TEXTURE_CLASSES, ImageFolderDataModule

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["data", "finetune_vit", "finetune_cnn", "metrics", "run"]


def gpu_check(args: list[str], tmp_path: Path, timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "LTX_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(["bash", "experiments/gpu_check.sh", *args, "--out", str(tmp_path / "out")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_gpu_check_smoke_passes_every_step(tmp_path):
    proc = gpu_check(["--smoke"], tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tmp_path / "out" / "gpu_check.md").read_text()
    assert table.strip() in proc.stdout  # printed and written
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ")][1:]
    assert [r[0].strip() for r in rows] == STEPS
    assert all(r[-1].strip() == "pass" for r in rows), table
    assert all(float(r[2]) >= 0 and r[3].strip() for r in rows)  # seconds and key numbers
    finetune = dict((r[0].strip(), r[3]) for r in rows)
    assert "seq (B=1)" in finetune["finetune_vit"] and "B=2 bf16+compile" in finetune["finetune_cnn"]
    assert "Estimate of the paper protocol on this device" in table and "not computed" not in table
    assert (tmp_path / "out" / "run" / "results.csv").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_gpu_check_without_a_gpu_says_so_and_runs_nothing(tmp_path):
    proc = gpu_check([], tmp_path, timeout=300)
    assert proc.returncode == 2
    assert "no CUDA GPU visible" in proc.stderr and "--smoke" in proc.stderr
    assert not (tmp_path / "out" / "gpu_check.md").exists()


def test_textures_folder_has_imagefolder_layout_and_counts(tmp_path):
    root = write_textures_folder(tmp_path / "folder", size=24, train_per_class=1, val_per_class=2, num_classes=3)
    for split, count in (("train", 1), ("val", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(TEXTURE_CLASSES[:3])
        files = sorted((root / split).glob("*/*.png"))
        assert len(files) == 3 * count
        assert all(Image.open(f).size == (24, 24) and Image.open(f).mode == "RGB" for f in files)
    names = {p.name for p in root.rglob("*.png")}
    assert len(names) == 9  # train and val draw disjoint generator indices
    data = ImageFolderDataModule(root=str(root), image_size=24)
    data.setup()
    assert data.num_classes == 3

"""The paper's experiments run end to end on a tiny generated ImageFolder with random timm weights:
the real path (ImageFolder data, timm ViT-B / ResNet-101 at 224 px) works without ImageNet or hub."""

import csv
import math

import pytest
import torch
from PIL import Image

from experiments import paper_tables
from tests.test_run import run_ltx


def write_image_folder(root, classes=("goldfish", "tabby"), per_class=2, size=(240, 200)):
    generator = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = (torch.rand(size[1], size[0], 3, generator=generator) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{name}_{i}.JPEG")
    return root


TINY_PAPER = ["backbone.{name}.weights=random", "pretrain.epochs=1", "pretrain.batch_size=2",
              "explain.num_images=2", "explain.batch_size=2", "explain.grid_images=1", "class_modes=[target]",
              "data.num_workers=0", "eval.chunk_size=20",
              "trainer.enable_progress_bar=false"]


@pytest.mark.slow
@pytest.mark.parametrize("name, methods", [("vit_b", "[ltx_sel,rollout]"), ("resnet101", "[ltx_sel,gradcam]")])
def test_paper_experiment_end_to_end(tmp_path, cache_dir, name, methods):
    root = write_image_folder(tmp_path / "imagenet")
    out = tmp_path / "run"
    args = [f"+experiment={name}", f"data.root={root}", f"hydra.run.dir={out}", f"method={methods}",
            "method.ltx_sel.steps=1", *[a.format(name=name) for a in TINY_PAPER]]
    proc = run_ltx(args, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["metric"] for r in rows} == {"pos", "neg", "ins", "del"}
    assert {r["method"] for r in rows} == set(methods.strip("[]").split(","))
    assert all(math.isfinite(float(r["value"])) and 0 <= float(r["value"]) <= 90 for r in rows)
    assert (out / f"explainers/{name}/target.safetensors").is_file()
    table = paper_tables.markdown(paper_tables.collect([out]))
    assert "| ltx_sel |" in table


def test_paper_experiment_without_data_root_says_what_to_set(tmp_path, cache_dir):
    proc = run_ltx(["+experiment=vit_b", f"hydra.run.dir={tmp_path}"], cache_dir)
    assert proc.returncode == 1
    assert "data.root" in proc.stderr and "Traceback" not in proc.stderr


def test_paper_experiment_with_missing_checkpoint_says_what_was_looked_for(tmp_path, cache_dir):
    root = write_image_folder(tmp_path / "imagenet", per_class=1)
    proc = run_ltx(["+experiment=resnet101", f"data.root={root}", f"hydra.run.dir={tmp_path / 'run'}",
                    f"backbone.resnet101.weights={tmp_path / 'r101.safetensors'}"], cache_dir)
    assert proc.returncode == 1
    assert "checkpoint not found: looked for" in proc.stderr and "r101.safetensors" in proc.stderr


def test_paper_tables_put_the_papers_numbers_beside_ours(tmp_path):
    rows = [dict(backbone="vit_b", method="ltx_sel", class_mode=mode, metric=metric, value=value)
            for mode in ("predicted", "target") for metric, value in (("pos", 10.0), ("neg", 60.0))]
    (tmp_path / "results.csv").write_text(
        "backbone,method,class_mode,metric,value\n" + "".join(
            f"{r['backbone']},{r['method']},{r['class_mode']},{r['metric']},{r['value']}\n" for r in rows))
    paper_tables.main([str(tmp_path), "--out", str(tmp_path / "tables")])
    text = (tmp_path / "tables" / "paper_tables.md").read_text()
    assert "ViT-B/16" in text and "60.00 (paper 64.83)" in text and "60.00 (paper 65.49)" in text
    assert r"\begin{tabular}" in (tmp_path / "tables" / "paper_tables.tex").read_text()

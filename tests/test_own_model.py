"""A user's own model and data, no config written: a timm CNN and ViT trained here with plain PyTorch
at 48 px on a generated ImageFolder, each with its own normalisation, explained by `ltx explain`
(--image-size, --norm / --mean --std, --model-arg) and by `ltx.run backbone=custom`; a checkpoint
cached by `ltx.run` read back with no option; degenerate masks flagged."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

import ltx.figures
from ltx.cli import build_parser
from ltx.cli.explain import load_model
from ltx.methods.ltx import degenerate_masks
from tests.helpers import (
    SQUARE_COLOURS,
    compose_config,
    own_preprocessing,
    square_folder,
    train_own_classifier,
)
from tests.test_cli import assert_one_line_error, run_cli
from tests.test_run import run_ltx

SIZE = 48
#: each model as its user trained it, and the `ltx explain` options that say so
OWN_MODELS: dict[str, dict[str, Any]] = {
    "test_resnet": dict(mean=(0.5,) * 3, std=(0.25,) * 3, kwargs={}, train=dict(epochs=5, lr=3e-3),
                        options=["--mean", "0.5", "--std", "0.25"]),
    # a 48 px ViT with 8 px patches does not load without its model arguments
    "test_vit": dict(mean=(0.0,) * 3, std=(1.0,) * 3, train=dict(epochs=8, lr=1e-3),
                     kwargs=dict(img_size=SIZE, patch_size=8, global_pool="avg"),
                     options=["--norm", "none", "--model-arg", f"img_size={SIZE}", "--model-arg",
                              "patch_size=8", "--model-arg", "global_pool=avg"]),
}


@pytest.fixture(autouse=True)
def _threads() -> None:
    """One thread here (in place of conftest's two): the models trained here and their masks are then the
    same on any machine, and a shared CPU does not slow them down by thread contention (measured: the
    explain tests took 165-195 s each with two threads on a loaded 2-core machine, 18 s with one)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's ImageFolder: train/ and val/, 4 classes."""
    root = tmp_path_factory.mktemp("own") / "data"
    return square_folder(root, size=SIZE, per_class={"train": 100, "val": 4})


@pytest.fixture(scope="module")
def own(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, torch.nn.Module]]:
    """Each model trained for a few seconds and saved as a plain state dict (.pth, no metadata)."""
    torch.set_num_threads(1)  # set up before `_threads` runs
    saved = {}
    for name, spec in OWN_MODELS.items():
        model = train_own_classifier(name, folder / "train", mean=spec["mean"], std=spec["std"],
                                     **spec["train"], **spec["kwargs"])
        path = tmp_path_factory.mktemp("checkpoints") / f"{name}.pth"
        torch.save(model.state_dict(), path)
        saved[name] = (path, model)
    return saved


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each model with random weights, saved the same way: enough where what it predicts does not matter."""
    folder = tmp_path_factory.mktemp("untrained")
    for name, spec in OWN_MODELS.items():
        torch.manual_seed(0)
        torch.save(timm.create_model(name, num_classes=len(SQUARE_COLOURS), **spec["kwargs"]).state_dict(),
                   folder / f"{name}.pth")
    return {name: folder / f"{name}.pth" for name in OWN_MODELS}


def explain(images: Path, checkpoint: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["explain", str(images), "--model", str(checkpoint), "--arch", name, "--image-size", str(SIZE),
            *OWN_MODELS[name]["options"], "--out", str(out), "--quiet", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OWN_MODELS))
def test_explain_own_checkpoint_at_its_size_and_normalisation(tmp_path, folder, own, capsys, name):
    """With its size, normalisation and model arguments the checkpoint predicts as on its own
    preprocessing, and the CLI's defaults give masks that are not degenerate."""
    checkpoint, model = own[name]
    code, err = run_cli(explain(folder / "val", checkpoint, tmp_path / "out", name), capsys)
    assert code == 0, err
    index = json.loads((tmp_path / "out" / "explanations.json").read_text())
    paths = [Path(r["image"]) for r in index["images"]]
    spec = OWN_MODELS[name]
    with torch.no_grad():
        own_predictions = model(own_preprocessing(paths, spec["mean"], spec["std"])).argmax(-1).tolist()
    assert [r["class"] for r in index["images"]] == own_predictions
    labels = [sorted(SQUARE_COLOURS).index(p.parent.name) for p in paths]
    assert sum(map(int.__eq__, own_predictions, labels)) >= 0.9 * len(labels)  # a trained model
    assert index["degenerate"] is None and not [r for r in index["images"] if r["degenerate"]], index
    assert "degenerate" not in err and "does not say how the model was trained" not in err


def test_degenerate_masks_are_flagged_in_the_log_the_index_and_the_figure(tmp_path, folder, untrained, capsys,
                                                                          monkeypatch):
    titles: list[str | None] = []
    figure = ltx.figures.explanation_figure
    monkeypatch.setattr(ltx.figures, "explanation_figure",
                        lambda *args, **kwargs: (titles.append(kwargs.get("flag")), figure(*args, **kwargs)))
    out = tmp_path / "out"
    forced = ["--mask-weight", "1000", "--pretrain-steps", "20", "--steps", "1"]
    args = explain(folder / "val" / "red", untrained["test_resnet"], out, "test_resnet", *forced)
    code, err = run_cli(args, capsys)
    assert code == 0, err
    (line,) = [line for line in err.splitlines() if "degenerate" in line]
    assert re.search(r"warning: 4 of 4 masks are degenerate: 4 empty, area < 0.5% \(lower --mask-weight "
                     r"\(now 1000\) or pretrain longer \(--pretrain-steps, now 20\)", line), err
    index = json.loads((out / "explanations.json").read_text())
    assert index["degenerate"] == line.removeprefix("warning: ")
    assert {r["degenerate"] for r in index["images"]} == {"empty"}
    assert all(r["mask_area"] < 0.005 for r in index["images"])
    assert len(titles) == 4 and all(t.startswith("DEGENERATE mask (empty, area < 0.5%): lower --mask-weight")
                                     for t in titles)
    assert (out / index["images"][0]["figure"]).is_file()
    assert "degenerate mask: empty" in (out / "index.html").read_text()


def test_degenerate_masks_definition():
    flat = torch.full((8, 8), 0.4)
    one_cell_off = flat.clone()
    one_cell_off[0, 0] = 0.5
    masks = torch.stack([torch.zeros(8, 8), torch.full((8, 8), 0.004), torch.ones(8, 8), flat, one_cell_off,
                         torch.eye(8)])
    assert degenerate_masks(masks) == ["empty", "empty", "full", "flat", None, None]


def test_a_runs_degenerate_masks_are_flagged_in_its_log_and_report(caplog):
    """The run flags its LTX variants' degenerate masks (the baselines' maps are not masks) with its own
    settings' names, in the log and in results.md."""
    from ltx.report import markdown
    from ltx.stages.evaluate import Evaluation, flag_degenerate
    from ltx.store import MapKey

    cfg = compose_config(["method=[ltx,random]"])
    result = Evaluation()
    for method in ("ltx", "random"):
        flag_degenerate(cfg, MapKey("vit", method, "predicted"), torch.zeros(3, 8, 8), result)
    (line,) = result.degenerate.values()
    assert list(result.degenerate) == ["vit/ltx/predicted"] and line in caplog.text
    assert line.startswith("3 of 3 masks are degenerate: 3 empty, area < 0.5% (lower loss.mask_weight "
                           "(now 2.5) or pretrain longer (pretrain.epochs, now 4)")
    info = {"blackbox_accuracy": {"vit": 0.9}, "degenerate_masks": result.degenerate}
    assert f"Degenerate masks, vit/ltx/predicted: {line}." in markdown([], info)


@pytest.mark.parametrize("options, expected", [
    (["--norm", "zca"], "unknown --norm 'zca': choose imagenet, inception, none"),
    (["--norm", "none", "--mean", "0", "--std", "1"], "give --norm or --mean/--std, not both"),
    (["--mean", "0.5"], "--mean and --std go together"),
    (["--mean", "0", "0", "--std", "1"], "--mean takes 1 value .* or 3 .*, got 2"),
    (["--image-size", "64", *OWN_MODELS["test_vit"]["options"][2:]],
     "the model is built for 48x48 px images, not 64x64: set --image-size N .* "
     "\\(--model-arg KEY=VALUE, e.g. img_size"),
    (["--image-size", "48"],
     "does not match the architecture VisionTransformer: .*pos_embed.*model arguments "
     "\\(--model-arg KEY=VALUE, e.g. img_size\\)"),
])
def test_model_options_errors(tmp_path, folder, untrained, capsys, options, expected):
    args = ["explain", str(folder / "val"), "--model", str(untrained["test_vit"]), "--arch", "test_vit",
            "--out", str(tmp_path / "out"), *options]
    code, err = run_cli(args, capsys)
    assert code == 1
    assert_one_line_error(err, expected)


def test_model_args_are_yaml_scalars(capsys):
    args = build_parser().parse_args(["explain", "x.png", "--model", "m.pth", "--model-arg", "img_size=64",
                                      "--model-arg", "drop_rate=0.1", "--model-arg", "global_pool=avg",
                                      "--model-arg", "class_token=false", "--model-arg", "img_size=48"])
    assert dict(args.model_args) == {"img_size": 48, "drop_rate": 0.1, "global_pool": "avg",
                                     "class_token": False}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["explain", "x.png", "--model", "m.pth", "--model-arg", "img_size"])
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_a_run_checkpoint_is_explained_with_no_option(tmp_path, caplog):
    """`ltx.run` writes the architecture, input size, normalisation and model arguments into the black box
    it caches; `ltx explain --model` reads them back; an option that differs wins, with a warning."""
    from ltx.pipeline import prepare_data
    from ltx.stages.blackbox import ensure_blackbox

    folder = square_folder(tmp_path / "data", size=SIZE, per_class={"train": 8, "val": 1})
    recipe = "backbone.custom.train={epochs: 1, batch_size: 64, lr: 1.0e-3, weight_decay: 0.05}"
    cfg = compose_config(["backbone=custom", "backbone.custom.name=test_vit", "backbone.custom.weights=train",
                          f"backbone.custom.image_size={SIZE}", recipe,
                          "backbone.custom.model_kwargs={img_size: 48, patch_size: 8}",
                          "backbone.custom.mean=[0.5,0.5,0.5]", "backbone.custom.std=[0.25,0.25,0.25]",
                          "data=imagenet", f"data.root={folder}", "data.num_workers=0", "eval=paper",
                          f"paths.cache_dir={tmp_path}", "trainer.enable_progress_bar=false", "logger=[]",
                          "explain.num_images=4", f"hydra.run.dir={tmp_path}"])
    cfg.paths.output_dir = str(tmp_path)
    datamodule, _ = prepare_data(cfg)
    trained = ensure_blackbox(cfg, "custom", cfg.backbone.custom, datamodule)
    (cached,) = (tmp_path / "blackboxes").glob("custom-*.safetensors")
    explained = load_model(build_parser().parse_args(["explain", "x.png", "--model", str(cached)]))
    assert (explained.name, explained.image_size, explained.num_classes) == ("test_vit", SIZE, 4)
    assert explained.mean.flatten().tolist() == [0.5] * 3 and explained.std.flatten().tolist() == [0.25] * 3
    images = torch.rand(2, 3, SIZE, SIZE)
    assert torch.equal(explained(images), trained(images))
    assert "does not say how the model was trained" not in caplog.text
    explained = load_model(build_parser().parse_args(["explain", "x.png", "--model", str(cached), "--norm",
                                                      "imagenet"]))
    assert explained.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    assert re.search(r"--norm/--mean 0.485 0.456 0.406 overrides the checkpoint's metadata "
                     r"\(mean 0.5 0.5 0.5, in custom-\w+.safetensors\)", caplog.text)


def test_data_image_size_follows_the_backbone():
    custom = ["backbone=custom", "backbone.custom.name=resnet18", "backbone.custom.weights=/m.pth",
              "backbone.custom.image_size=64", "data=imagenet", "data.root=/nowhere"]
    assert compose_config(custom).data.image_size == 64
    assert compose_config([*custom, "data.image_size=32"]).data.image_size == 32
    assert compose_config(["+experiment=vit_b", "data.root=/nowhere"]).data.image_size == 224
    cfg = compose_config(["backbone=[vit_b,textures_vit]", "data=imagenet", "data.root=/nowhere"])
    with pytest.raises(ValueError, match="backbones take images of different sizes .*set data.image_size=N"):
        cfg.data.image_size


@pytest.mark.slow
def test_custom_backbone_runs_the_pipeline_on_the_users_folder(tmp_path, folder, own, cache_dir):
    out = tmp_path / "run"
    checkpoint = own["test_resnet"][0]
    custom = ["backbone=custom", "backbone.custom.name=test_resnet", f"backbone.custom.weights={checkpoint}",
              f"backbone.custom.image_size={SIZE}", "backbone.custom.mean=[0.5,0.5,0.5]",
              "backbone.custom.std=[0.25,0.25,0.25]", "data=imagenet", f"data.root={folder}",
              "data.num_workers=0"]
    tiny = ["pretrain.epochs=1", "method=[ltx,ltx_pretrained,gradcam,random]", "method.ltx.steps=2",
            "explain.num_images=8", "class_modes=[predicted]", "trainer.enable_progress_bar=false",
            f"hydra.run.dir={out}"]
    proc = run_ltx([*custom, *tiny], cache_dir)  # eval=ground_truth (the default): the folder has no masks
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "eval.metrics: pointing_game.* need ground-truth masks, which "
                                       "data=ltx.data.ImageFolderDataModule does not have: choose eval=paper")
    assert not (out / "maps").exists() and not (out / "explainers").exists()
    proc = run_ltx([*custom, *tiny, "eval=paper"], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], r["metric"]) for r in rows} == {
        (m, k) for m in ("ltx", "ltx_pretrained", "gradcam", "random") for k in ("pos", "neg", "ins", "del")}
    info = json.loads((out / "run_info.json").read_text())
    assert info["blackbox_accuracy"]["custom"] == 1.0  # fed as it was trained: its own size and normalisation
    assert "pretrain.num_train=2000 is more than the split's 400 images: using all of them" in proc.stdout

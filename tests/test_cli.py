"""`ltx explain` and `ltx report`: outputs a person opens, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ltx.cli import build_parser, main
from ltx.cli.explain import load_model, unique_stems
from ltx.data.shapes import SHAPE_CLASSES
from ltx.models.zoo import create_network
from ltx.store import write_json, write_results

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny explained models with random weights, saved as a user would have them."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for name in ("ltx_shapes_vit", "ltx_shapes_resnet"):
        torch.manual_seed(0)
        paths[name] = folder / f"{name}.safetensors"
        save_file(create_network(name, num_classes=8).state_dict(), str(paths[name]),
                  metadata={"model": name})
    paths["anonymous"] = folder / "anonymous.pth"
    torch.save(create_network("ltx_shapes_vit", num_classes=8).state_dict(), paths["anonymous"])
    return paths


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Images as found on disk: several sizes and modes, one corrupt file and one too small to explain."""
    root = tmp_path / "images"
    (root / "more").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (50, 90, 3), dtype=np.uint8)).save(root / "photo.jpg")
    Image.fromarray(rng.integers(0, 256, (70, 40), dtype=np.uint8), "L").save(root / "more" / "gray.png")
    deep = rng.integers(0, 65536, (33, 47), dtype=np.uint16)
    Image.fromarray(deep).save(root / "more" / "deep.png")  # 16-bit grayscale
    Image.new("RGBA", (64, 64), (255, 0, 0, 100)).save(root / "more" / "photo.png")  # stem of photo.jpg
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    Image.new("RGB", (5, 30)).save(root / "sliver.png")  # 5 px wide: less than one 8 px patch
    return root


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """Run `ltx ARGS` in this process; (exit code, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exit:
        code = int(exit.code or 0)
    return code, capsys.readouterr().err


def explain_args(images: list[str], model: Path, out: Path, *extra: str) -> list[str]:
    """`ltx explain` with the least work (the errors under test come before any of it)."""
    return ["explain", *images, "--model", str(model), "--out", str(out), "--pretrain-steps", "1",
            "--steps", "1", "--quiet", *extra]


def assert_one_line_error(err: str, expected: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and re.search(expected, lines[0]), err
    assert "LTX_DEBUG=1" in err


@pytest.mark.slow
def test_explain_a_folder_then_reuse_the_explainer(tmp_path, images, checkpoints, capsys):
    out, model = tmp_path / "out", checkpoints["ltx_shapes_vit"]
    code, err = run_cli(explain_args([str(images)], model, out, "--pretrain-steps", "2", "--steps", "2",
                                     "--batch-size", "3"), capsys)
    assert code == 0, err
    # the folder's bad files are skipped with a warning naming them, the rest is explained
    assert "broken.jpg" in err and "sliver.png" in err and "smaller than one 8 px patch" in err
    index = json.loads((out / "explanations.json").read_text())
    records = {Path(r["image"]).relative_to(images).as_posix(): r for r in index["images"]}
    assert set(records) == {"photo.jpg", "more/gray.png", "more/deep.png", "more/photo.png"}
    assert len({r["figure"] for r in records.values()}) == 4  # photo.jpg and more/photo.png do not collide
    for relative, record in records.items():
        width, height = Image.open(images / relative).size
        saved = load_file(str(out / record["safetensors"]))
        assert saved["map"].shape == (height, width)  # at the image's own size
        assert saved["model_input_map"].shape == (64, 64)
        assert 0 <= float(saved["map"].min()) and float(saved["map"].max()) <= 1
        assert np.array_equal(np.load(out / record["npy"]), saved["map"].numpy())
        assert Image.open(out / record["figure"]).size[0] > 1000  # the 4-panel figure
        assert record["class_name"] in SHAPE_CLASSES  # the label names of the model's timm config
    page = (out / "index.html").read_text()
    assert all(f'src="{r["figure"]}"' in page for r in records.values())
    assert "http://" not in page and "https://" not in page  # opens offline
    assert "pretrained on 4 images for 2 steps" in page

    again = tmp_path / "again"
    reuse = ["--explainer", str(out / "explainer.safetensors"), "--class", "3", "--steps", "0"]
    code, err = run_cli(explain_args([str(images / "photo.jpg")], model, again, *reuse), capsys)
    assert code == 0, err
    (record,) = json.loads((again / "explanations.json").read_text())["images"]
    assert record["class"] == 3 and record["class_name"] == "cross"
    assert not (again / "explainer.safetensors").exists()  # loaded, not pretrained


@pytest.mark.parametrize("case, expected", [
    ("missing.jpg", "image not found: .*missing.jpg"),
    ("broken.jpg", "cannot read image .*broken.jpg.*Replace or remove the file"),
    ("sliver.png", "sliver.png is 5x30 px, smaller than one 8 px patch .* at least 8x8 px"),
    ("nothing-*.png", "no images .* matching .*nothing-\\*.png"),
])
def test_bad_named_images_are_one_line_errors(tmp_path, images, checkpoints, capsys, case, expected):
    """A file named on the command line that cannot be explained stops the run, saying why."""
    code, err = run_cli(explain_args([str(images / case)], checkpoints["ltx_shapes_vit"], tmp_path / "out"),
                        capsys)
    assert code == 1
    assert_one_line_error(err, expected)


def test_model_errors(tmp_path, images, checkpoints, capsys):
    vit, resnet = str(checkpoints["ltx_shapes_vit"]), str(checkpoints["ltx_shapes_resnet"])
    cases = [
        (["--model", "resnet5O"], "unknown model 'resnet5O' \\(--model / --arch\\). Closest timm names: "
                                  ".*resnet50.*list_models\\('resnet\\*'\\)"),
        (["--model", str(tmp_path / "gone.safetensors")],
         "checkpoint not found: looked for .*gone.safetensors"),
        (["--model", str(checkpoints["anonymous"])], "does not name its architecture: add --arch NAME"),
        (["--model", vit, "--arch", "ltx_shapes_resnet"],
         "does not match the architecture ResNet: \\d+ missing keys \\(conv1.weight, .*unexpected keys"),
        (["--model", resnet, "--explainer", vit],
         "does not match the architecture ModuleDict: .*missing keys \\(explainer."),
        (["--model", vit, "--class", "8"], "--class 8 is out of range: .* 8 classes"),
        (["--model", vit, "--set", "loss.mask_weight=-1"], "loss.mask_weight must be >= 0, got -1"),
        (["--model", vit, "--set", "loss.mask_wieght=1"], "--set loss.mask_wieght=1: Could not override"),
    ]
    for options, expected in cases:
        code, err = run_cli(["explain", str(images / "photo.jpg"), "--out", str(tmp_path / "out"), *options],
                            capsys)
        assert code == 1, options
        assert_one_line_error(err, expected)


def test_anonymous_checkpoint_loads_with_arch(checkpoints):
    """A plain torch state dict (weights_only) with --arch; the classes come from its classifier."""
    args = build_parser().parse_args(["explain", "x.png", "--model", str(checkpoints["anonymous"]),
                                      "--arch", "ltx_shapes_vit"])
    explained = load_model(args)
    assert explained.num_classes == 8 and explained.image_size == 64 and explained.name == "ltx_shapes_vit"


@pytest.mark.parametrize("options, expected", [
    (["--steps", "-1"], "argument --steps: must be >= 0, got -1"),
    (["--pretrain-steps", "0"], "argument --pretrain-steps: must be >= 1, got 0"),
    (["--mask-weight", "-0.5"], "argument --mask-weight: must be >= 0, got -0.5"),
    (["--lr", "0"], "argument --lr: must be > 0, got 0"),
    (["--batch-size", "two"], "argument --batch-size: expected int >= 1, got 'two'"),
    (["--class", "-3"], "argument --class: must be >= 0, got -3"),
])
def test_out_of_range_options_are_refused_before_any_work(tmp_path, capsys, options, expected):
    code, err = run_cli(["explain", "x.png", "--model", "resnet18", "--out", str(tmp_path / "out"), *options],
                        capsys)
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_output_folder_must_be_writable(tmp_path, images, checkpoints, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = explain_args([str(images / "photo.jpg")], checkpoints["ltx_shapes_vit"], blocker / "out")
    code, err = run_cli(args, capsys)
    assert code == 1
    assert_one_line_error(err, "output folder .*a-file/out cannot be created: a file is in the way.*--out")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, images, checkpoints, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    args = explain_args([str(images / "photo.jpg")], checkpoints["ltx_shapes_vit"], locked)
    code, err = run_cli(args, capsys)
    assert code == 1
    assert_one_line_error(err, "cannot write to the output folder .*locked.*--out DIR")


@pytest.mark.slow
def test_errors_in_a_real_process_exit_1_without_traceback(tmp_path):
    command = [sys.executable, "-m", "ltx.cli", "explain", str(tmp_path / "nope.png"), "--model",
               "ltx_shapes_vit", "--out", str(tmp_path / "out")]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1
    assert "error: image not found" in proc.stderr and "Traceback" not in proc.stderr
    debug = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                           env={**os.environ, "LTX_DEBUG": "1"})
    assert "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr


def test_console_script_is_declared():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "ltx"]
    assert script.value == "ltx.cli:main"
    assert 'ltx = "ltx.cli:main"' in (ROOT / "pyproject.toml").read_text()


def test_unique_stems():
    paths = [Path("a/x.jpg"), Path("b/x.png"), Path("y.png"), Path("c/x.bmp")]
    assert unique_stems(paths) == ["x", "x_2", "y", "x_3"]


def test_report_command_writes_the_html_of_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    code, err = run_cli(["report", str(run)], capsys)
    assert code == 1
    assert_one_line_error(err, "has no results.csv or run_info.json: give the output directory")
    row = {"backbone": "vit", "method": "ltx", "class_mode": "predicted", "metric": "pos", "value": 12.5}
    write_results(run / "results.csv", [row])
    write_json(run / "run_info.json", {"blackbox_accuracy": {"vit": 0.9}, "settings": {}})
    Image.new("RGB", (20, 10), (0, 128, 255)).save(run / "curves_vit.png")
    code, err = run_cli(["report", str(run)], capsys)
    assert code == 0, err
    page = (run / "results.html").read_text()
    assert "<td class=best>12.5</td>" in page and "data:image/png;base64," in page

"""The `ltx` command: its options and entry point (`ltx = "ltx.cli:main"`, `python -m ltx.cli`).

`ltx explain IMAGES... --model NAME_OR_CHECKPOINT`: LTX explanations of a timm classifier on your
own images (`ltx.cli.explain`).

`ltx report RUN_DIR`: (re)write a finished run's self-contained results.html.

Errors the user can fix end with one line naming the problem and the fix (`ltx.run`'s handling;
`LTX_DEBUG=1` shows the traceback). torch, timm and Lightning are imported inside the commands,
so `ltx --help` and an option out of range answer at once, not after seconds of imports.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ltx.cli.explain import explain

log = logging.getLogger(__name__)

# --- options -----------------------------------------------------------------------------------------

def _number(kind: type, low: float, *, inclusive: bool = True) -> Callable[[str], Any]:
    """An argparse type: a `kind` number >= low (> low when not inclusive), else a one-line error."""
    bound = f"{'>=' if inclusive else '>'} {low}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} {bound}, got {text!r}") from None
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def _class_option(text: str) -> int | str:
    if text == "predicted":
        return text
    return _number(int, 0)(text)


def _model_arg(text: str) -> tuple[str, Any]:
    """`KEY=VALUE`, the value read as a YAML scalar (64 → int, 0.1 → float, true → bool, null → None)."""
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a timm.create_model argument), got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not a YAML scalar (quote a string)") \
            from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltx", description="LTX explanations of image classifiers")
    commands = parser.add_subparsers(dest="command_name", required=True)

    ex = commands.add_parser(
        "explain", help="explain a classifier's predictions on your images",
        description="LTX explanations of a timm classifier on your images: an explainer is loaded "
                    "(--explainer) or pretrained on the images, then finetuned on each; writes a figure, "
                    "the raw map and index.html.")
    ex.set_defaults(command=explain)
    ex.add_argument("images", nargs="+",
                    help="image files, folders (searched recursively) or quoted glob patterns")
    ex.add_argument("--model", required=True, metavar="NAME_OR_CHECKPOINT",
                    help="a timm model name (pretrained weights from the hub or its local cache), or a "
                         "checkpoint file (.safetensors / .pth) whose architecture is in its metadata or "
                         "given by --arch")
    ex.add_argument("--arch", metavar="NAME",
                    help="the timm architecture of a --model checkpoint that does not name it")
    ex.add_argument("--num-classes", type=_number(int, 1), metavar="N",
                    help="classes of the model (default: the checkpoint's classifier, else timm's default)")
    model = ex.add_argument_group(
        "how the model was trained",
        "What a checkpoint written by `ltx.run` says in its metadata; for any other, the architecture's timm "
        "defaults (224 px and ImageNet statistics for most) unless given here. Given here, they win over the "
        "metadata (with a warning where they differ).")
    model.add_argument("--image-size", type=_number(int, 1), metavar="N",
                       help="the input size in px the model was trained at: images are resized to N x N")
    model.add_argument("--norm", metavar="imagenet|inception|none",
                       help="the normalisation of its [0, 1] inputs: ImageNet's mean/std, Inception's "
                            "(0.5/0.5) or none (mean 0, std 1)")
    model.add_argument("--mean", type=float, nargs="+", metavar="M",
                       help="explicit per-channel mean (1 or 3 values, with --std) instead of --norm")
    model.add_argument("--std", type=_number(float, 0, inclusive=False), nargs="+", metavar="S",
                       help="explicit per-channel std (1 or 3 values, with --mean)")
    model.add_argument("--model-arg", dest="model_args", type=_model_arg, action="append", default=[],
                       metavar="KEY=VALUE",
                       help="a timm.create_model argument the model was built with, the value read as YAML, "
                            "e.g. --model-arg img_size=64 --model-arg patch_size=8 (repeatable)")
    ex.add_argument("--explainer", metavar="CKPT",
                    help="a pretrained explainer (.safetensors, as `ltx.run` writes under explainers/ or "
                         "`ltx explain` as explainer.safetensors)")
    ex.add_argument("--class", dest="class_", type=_class_option, default="predicted", metavar="N|predicted",
                    help="the class to explain: 'predicted' (the model's top-1 per image, default) or an "
                         "index")
    ex.add_argument("--out", type=Path, default=Path("ltx-explanations"), metavar="DIR",
                    help="output folder (default: %(default)s)")
    ex.add_argument("--steps", type=_number(int, 0),
                    help="finetuning steps per image (default: method.ltx.steps, 25; 0: the pretrained map)")
    ex.add_argument("--lr", type=_number(float, 0, inclusive=False), help="finetuning learning rate")
    ex.add_argument("--mask-weight", type=_number(float, 0),
                    help="weight of the mask size penalty (loss.mask_weight)")
    ex.add_argument("--pretrain-steps", type=_number(int, 1), default=100,
                    help="pretraining steps without --explainer (default: %(default)s)")
    ex.add_argument("--pretrain-images", nargs="+", default=[], metavar="IMAGES",
                    help="more images, folders or globs to pretrain the explainer on (not explained)")
    ex.add_argument("--batch-size", type=_number(int, 1), default=16,
                    help="images finetuned together, and the pretraining batch (default: %(default)s)")
    ex.add_argument("--top-k", type=_number(int, 1), default=5,
                    help="classes shown per image (default: %(default)s)")
    ex.add_argument("--labels", type=Path, metavar="FILE", help="a text file of class names, one per line")
    ex.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a Hydra override of the run config's explainer, masking, loss, pretrain, "
                         "method.ltx or finetune settings, e.g. --set masking=blur --set finetune.scope=head "
                         "(repeatable; an --explainer from a run keeps that run's explainer, masking and "
                         "loss settings)")
    ex.add_argument("-q", "--quiet", action="store_true", help="no progress bars, only warnings and errors")

    rep = commands.add_parser("report", help="write a finished run's self-contained results.html")
    rep.set_defaults(command=report)
    rep.add_argument("run_dir", type=Path, help="the output directory of `python -m ltx.run`")
    rep.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return parser


# --- ltx report ----------------------------------------------------------------------------------------

def report(args: argparse.Namespace) -> Path:
    """results.html of a finished run, from its results.csv, run_info.json and figures."""
    from ltx.report import write_html_report
    from ltx.store import read_results

    run_dir = args.run_dir
    needed = [run_dir / "results.csv", run_dir / "run_info.json"]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir} has no {' or '.join(missing)}: give the output directory of a "
                                "finished `python -m ltx.run` (it prints it at the end)")
    info = json.loads(needed[1].read_text())
    path = write_html_report(run_dir, read_results(needed[0]), info, list(info["blackbox_accuracy"]))
    log.info("wrote %s", path)
    return path


# --- entry point ---------------------------------------------------------------------------------------

def _configure_logging(quiet: bool) -> None:
    """Show the package's log lines through the progress bars' console (once per process). Records of
    the 'ltx' logger itself are left out: they are `report_user_errors`' copy of the error (for
    Hydra's log file), which it prints itself."""
    from ltx.progress import ConsoleHandler

    logger = logging.getLogger("ltx")
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        handler = ConsoleHandler()
        handler.addFilter(lambda record: record.name != "ltx")
        logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> None:
    from ltx.run import report_user_errors

    args = build_parser().parse_args(argv)
    _configure_logging(args.quiet)
    report_user_errors(args.command)(args)

"""Collect run directories into the paper's table layout: methods × POS/NEG/INS/DEL × predicted/target.

    python experiments/paper_tables.py outputs/2026-11-23/10-00-00 [more run dirs] [--out tables]

Prints markdown, and writes `paper_tables.md` and `paper_tables.tex` when `--out` is given. The
numbers the paper reports (ImageNet validation, PROTOCOLS.md) stand in a column beside ours where
they exist; everything else the paper reports only as "LTX is best".
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ltx.store import read_results

METRICS = ("pos", "neg", "ins", "del")
MODES = ("predicted", "target")
ARROWS = {"pos": "↓", "neg": "↑", "ins": "↑", "del": "↓"}

#: Reported in the paper (ImageNet validation, 50,000 images): (paper model, method, metric, mode) → value.
PAPER = {
    ("vit_b", "ltx", "neg", "predicted"): 64.83,
    ("vit_b", "ltx", "neg", "target"): 65.49,
    ("resnet101", "ltx", "neg", "predicted"): 61.13,
    ("resnet101", "ltx", "neg", "target"): 62.80,
}
#: Our backbone config names for the paper's models.
PAPER_MODELS = {"vit_b": "ViT-B/16", "resnet101": "ResNet-101"}
#: Our method whose numbers correspond to the paper's LTX (the official code selects by POS).
PAPER_LTX = "ltx_sel"


def collect(run_dirs: list[Path]) -> dict[tuple[str, str, str, str], float]:
    """(backbone, method, metric, class_mode) → value, later run directories overriding earlier ones."""
    table: dict[tuple[str, str, str, str], float] = {}
    for run_dir in run_dirs:
        path = run_dir / "results.csv"
        if not path.is_file():
            raise SystemExit(f"error: no results.csv in {run_dir}: pass the output directory of an ltx.run")
        for row in read_results(path):
            table[(row["backbone"], row["method"], row["metric"], row["class_mode"])] = row["value"]
    return table


def paper_value(backbone: str, method: str, metric: str, mode: str) -> float | None:
    if method != PAPER_LTX:
        return None
    return PAPER.get((backbone, "ltx", metric, mode))


def rows_for(table: dict, backbone: str) -> list[tuple[str, list[str]]]:
    methods = list(dict.fromkeys(k[1] for k in table if k[0] == backbone))
    rows = []
    for method in methods:
        cells = []
        for mode in MODES:
            for metric in METRICS:
                value = table.get((backbone, method, metric, mode))
                cell = "–" if value is None else f"{value:.2f}"
                reported = paper_value(backbone, method, metric, mode)
                if reported is not None:
                    cell += f" (paper {reported:.2f})"
                cells.append(cell)
        rows.append((method, cells))
    return rows


def header_cells() -> list[str]:
    return [f"{m.upper()}{ARROWS[m]} {mode[:4]}." for mode in MODES for m in METRICS]


def markdown(table: dict) -> str:
    parts = []
    for backbone in dict.fromkeys(k[0] for k in table):
        title = PAPER_MODELS.get(backbone, backbone)
        parts += [f"### {title}", "", "| method | " + " | ".join(header_cells()) + " |",
                  "|---|" + "---:|" * len(header_cells())]
        parts += [f"| {method} | " + " | ".join(cells) + " |" for method, cells in rows_for(table, backbone)]
        parts.append("")
    parts.append(f"`{PAPER_LTX}` is LTX as the official code runs it (POS-selected per instance); "
                 "paper numbers in parentheses (ImageNet val, 50k images).")
    return "\n".join(parts)


def latex(table: dict) -> str:
    parts = []
    for backbone in dict.fromkeys(k[0] for k in table):
        title = PAPER_MODELS.get(backbone, backbone).replace("_", r"\_")
        parts += [r"\begin{table}[t]\centering", rf"\caption{{{title}: perturbation tests (AUC).}}",
                  r"\begin{tabular}{l" + "r" * 8 + "}", r"\toprule",
                  r" & \multicolumn{4}{c}{predicted} & \multicolumn{4}{c}{target} \\",
                  "method & " + " & ".join(
                      f"{m.upper()}$\\{'down' if ARROWS[m] == '↓' else 'up'}arrow$" for _ in MODES for m in METRICS)
                  + r" \\", r"\midrule"]
        for method, cells in rows_for(table, backbone):
            parts.append(method.replace("_", r"\_") + " & " + " & ".join(cells).replace("–", "--") + r" \\")
        parts += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="folder for paper_tables.md and paper_tables.tex")
    args = parser.parse_args(argv)
    table = collect(args.run_dirs)
    text = markdown(table)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "paper_tables.md").write_text(text + "\n")
        (args.out / "paper_tables.tex").write_text(latex(table))


if __name__ == "__main__":
    main()

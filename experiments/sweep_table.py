"""Collect a Hydra multirun directory into one table: one row per job, its overrides, its metrics.

    python experiments/sweep_table.py multirun/<date>/<time> [--metrics 'ltx*/*/*'] [--per-backbone]

Metric columns are result keys (`ltx.store.metric_values`): METHOD/CLASS_MODE/METRIC, the mean over
the job's backbones, or with `--per-backbone` BACKBONE/METHOD/CLASS_MODE/METRIC; `--metrics`
selects them by glob patterns (default: the LTX variants). Override columns are the overrides that
differ between jobs; the ones all jobs share are listed above the table. A job without
results.csv (failed or still running) gets a row with its overrides and no metrics. Writes
sweep_table.md and sweep_table.csv (in the multirun directory unless `--out`) and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
from pathlib import Path

from omegaconf import OmegaConf

from ltx.store import metric_values, read_results

DEFAULT_METRICS = ("ltx*/*/*",)


def job_dirs(root: Path) -> list[Path]:
    """The jobs of a multirun: sub-directories with a `.hydra/overrides.yaml`, in job order."""
    jobs = [p for p in root.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()] if root.is_dir() else []
    if not jobs:
        raise FileNotFoundError(f"no Hydra jobs (*/.hydra/overrides.yaml) under {root}: pass a multirun "
                                "directory")
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def job_overrides(job: Path) -> dict[str, str]:
    """`key=value` overrides of one job, by key (`+`/`~` prefixes kept with the key)."""
    overrides = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
    return dict(str(item).split("=", 1) for item in overrides)


def job_metrics(job: Path, patterns: list[str], per_backbone: bool) -> dict[str, float]:
    results = job / "results.csv"
    if not results.is_file():
        return {}
    parts = 4 if per_backbone else 3
    # METHOD/CLASS_MODE/METRIC patterns select the same results of every backbone in per-backbone mode
    patterns = [f"*/{p}" if per_backbone and p.count("/") == 2 else p for p in patterns]
    return {key: value for key, value in metric_values(read_results(results)).items()
            if key.count("/") == parts - 1 and any(fnmatch.fnmatchcase(key, p) for p in patterns)}


def collect(root: Path, patterns: list[str], per_backbone: bool = False
            ) -> tuple[dict[str, str], list[str], list[dict[str, str | float]]]:
    """(overrides shared by all jobs, column names, one row per job)."""
    jobs = job_dirs(root)
    overrides = [job_overrides(job) for job in jobs]
    metrics = [job_metrics(job, patterns, per_backbone) for job in jobs]
    keys = list(dict.fromkeys(k for o in overrides for k in o))
    shared = {k: overrides[0][k] for k in keys if all(o.get(k) == overrides[0].get(k) for o in overrides)}
    varying = [k for k in keys if k not in shared]
    metric_names = sorted({m for ms in metrics for m in ms})
    rows = [{"job": job.name, **{k: o.get(k, "") for k in varying}, **m}
            for job, o, m in zip(jobs, overrides, metrics)]
    return shared, ["job", *varying, *metric_names], rows


def _cell(value: str | float) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(shared: dict[str, str], columns: list[str], rows: list[dict[str, str | float]]) -> str:
    lines = [f"Overrides of every job: {' '.join(f'{k}={v}' for k, v in shared.items()) or '(none)'}", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, columns: list[str], rows: list[dict[str, str | float]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("multirun_dir", type=Path)
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                        help="glob patterns over result keys (default: %(default)s)")
    parser.add_argument("--per-backbone", action="store_true", help="one column per backbone, not the mean")
    parser.add_argument("--out", type=Path, help="folder for sweep_table.md/.csv (default: the multirun dir)")
    args = parser.parse_args(argv)
    shared, columns, rows = collect(args.multirun_dir, args.metrics, args.per_backbone)
    out = args.out or args.multirun_dir
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(shared, columns, rows)
    (out / "sweep_table.md").write_text(text)
    write_csv(out / "sweep_table.csv", columns, rows)
    print(text)


if __name__ == "__main__":
    main()

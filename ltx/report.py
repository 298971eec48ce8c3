"""What a person reads: a run's results.md (tables, printed at the end, figures linked) and
results.html (the same on one self-contained page, figures embedded; the figures themselves:
`ltx.figures`), the same sent to wandb (`logger=wandb`), and the index.html of `ltx explain`.

Both run reports are rendered from one outline of blocks, so the markdown and the HTML always
say the same thing.
"""

from __future__ import annotations

import base64
import html
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Subset

from ltx.figures import curve_fractions, curve_plot, map_grid
from ltx.store import RESULT_COLUMNS, MapStore, atomic_write, write_json

log = logging.getLogger(__name__)

#: the figures of one backbone in a run directory, by caption
FIGURES = {"perturbation curves": "curves_{}.png", "example maps": "maps_{}.png"}


def _higher_is_better(metric: str) -> bool | None:
    from ltx.metrics import METRICS
    from ltx.metrics.validity import FAITHFULNESS

    if metric == FAITHFULNESS:
        return True
    cls = METRICS.get(metric)
    return None if cls is None else bool(cls.higher_is_better)


@dataclass
class Table:
    """Methods × metrics of one backbone and class mode; `unranked` methods (the oracle, metric-
    selected maps) are shown after the others, marked, and never counted as the best."""

    metrics: list[str] = field(default_factory=list)
    cells: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    unranked: dict[str, str] = field(default_factory=dict)

    def methods(self) -> list[str]:
        """Ranked methods in result order, then the unranked ones."""
        return sorted(self.cells, key=lambda method: method in self.unranked)

    def label(self, method: str) -> str:
        return f"{method} ({self.unranked[method]})" if method in self.unranked else method

    def header(self, metric: str) -> str:
        """The metric's name with its direction (↑ / ↓: better)."""
        better = _higher_is_better(metric)
        return metric + ("" if better is None else " ↑" if better else " ↓")

    def best(self, metric: str) -> float | None:
        """The best value of a column, to highlight (None: no direction known)."""
        better = _higher_is_better(metric)
        values = [v[metric] for method, v in self.cells.items() if metric in v and method not in self.unranked]
        if better is None or not values:
            return None
        return max(values) if better else min(values)


def _table(rows: list[dict[str, Any]], backbone: str, class_mode: str,
           unranked: dict[str, str] | None = None) -> Table:
    table = Table(unranked=dict(unranked or {}))
    for row in rows:
        if row["backbone"] == backbone and row["class_mode"] == class_mode:
            table.metrics += [row["metric"]] if row["metric"] not in table.metrics else []
            table.cells[row["method"]][row["metric"]] = row["value"]
    return table


def _markdown_table(table: Table) -> str:
    """Methods × metrics as markdown, the best of each column in bold."""
    lines = ["| method | " + " | ".join(table.header(m) for m in table.metrics) + " |",
             "|---|" + "---:|" * len(table.metrics)]
    for method in table.methods():
        values, cells = table.cells[method], []
        for m in table.metrics:
            text = f"{values[m]:.4g}" if m in values else "–"
            cells.append(f"**{text}**" if m in values and values[m] == table.best(m) else text)
        name = f"*{table.label(method)}*" if method in table.unranked else method
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(table.header(m))}</th>" for m in table.metrics)
    body = []
    for method in table.methods():
        values, cells = table.cells[method], []
        for m in table.metrics:
            best = m in values and values[m] == table.best(m)
            text = f"{values[m]:.4g}" if m in values else "–"
            cells.append(f"<td{' class=best' if best else ''}>{text}</td>")
        unranked = " class=unranked" if method in table.unranked else ""
        body.append(f"<tr{unranked}><th>{html.escape(table.label(method))}</th>{''.join(cells)}</tr>")
    return f"<table><thead><tr><th>method</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --- the run report: one outline, two renderings ---------------------------------------------------

#: ("h1" | "h2" | "h3" | "p", text) | ("table", Table) | ("grid", (header, rows of strings))
#: | ("figure", (caption, path))
#: | ("code list", [(code, text)])
Block = tuple[str, Any]


def figures(run_dir: Path, backbone: str) -> dict[str, Path]:
    """The figures of `backbone` that the run directory holds, by caption."""
    paths = {caption: run_dir / name.format(backbone) for caption, name in FIGURES.items()}
    return {caption: path for caption, path in paths.items() if path.is_file()}


def outline(rows: list[dict[str, Any]], info: dict[str, Any],
            figure_paths: dict[str, dict[str, Path]] | None = None) -> list[Block]:
    """The report's blocks: per backbone its accuracy, a table per class mode, its figures; then
    how each method's maps were made."""
    blocks: list[Block] = [("h1", "Results")]
    modes = list(dict.fromkeys(row["class_mode"] for row in rows))
    for backbone, acc in info["blackbox_accuracy"].items():
        blocks += [("h2", backbone), ("p", f"Black-box test accuracy: {100 * acc:.2f} %")]
        validity = info.get("benchmark_validity", {}).get(backbone)
        if validity:
            blocks += validity_blocks(validity)
        blocks += [("p", f"Degenerate masks, {key}: {warning}.") for key, warning in
                   info.get("degenerate_masks", {}).items() if key.startswith(f"{backbone}/")]
        for mode in modes:
            table = _table(rows, backbone, mode, info.get("unranked"))
            if table.cells:
                blocks += [("h3", f"{mode} class"), ("table", table)]
        for caption, path in (figure_paths or {}).get(backbone, {}).items():
            blocks += [("h3", caption), ("figure", (f"{caption}, {backbone}", path))]
    settings = [(key, setting) for key, setting in info.get("settings", {}).items() if setting]
    if settings:
        blocks += [("h2", "How the maps were made"), ("code list", settings)]
    return blocks


def validity_blocks(entry: dict[str, Any]) -> list[Block]:
    """The benchmark's own sanity check (ltx.metrics.validity): the oracle against random maps."""
    verdict = ("passed: the ground-truth mask beats random maps by the required margin on every required "
               "check, so these perturbation metrics can rank methods" if entry["passed"] else
               f"FAILED on {', '.join(entry['failed'])}: the ground-truth mask does not beat random maps by the "
               "required margin there, so these perturbation metrics cannot rank methods on this data")
    grid = (["metric", "oracle (gt_mask)", "random", "needed", "ok"],
            [[c["metric"], f"{c['oracle']:.4g}", f"{c['random']:.4g}",
              c["rule"] if c["required"] else f"shown only ({c['rule']})",
              "yes" if c["passed"] else "NO" if c["required"] else "no"]
             for c in entry["checks"]])
    return [("h3", "Benchmark validity"), ("p", f"{verdict} ({entry['class_mode']} class rows)."), ("grid", grid)]


def markdown(rows: list[dict[str, Any]], info: dict[str, Any],
             figure_paths: dict[str, dict[str, Path]] | None = None) -> str:
    """results.md: figures are linked by file name (they lie beside it)."""
    parts: list[str] = []
    for kind, content in outline(rows, info, figure_paths):
        if kind in ("h1", "h2", "h3"):
            parts.append("#" * int(kind[1]) + " " + content)
        elif kind == "p":
            parts.append(content)
        elif kind == "table":
            parts.append(_markdown_table(content))
        elif kind == "grid":
            header, grid_rows = content
            parts.append("\n".join(["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
                                   + ["| " + " | ".join(r) + " |" for r in grid_rows]))
        elif kind == "figure":
            parts.append(f"![{content[0]}]({content[1].name})")
        else:
            parts.append("\n".join(f"- `{code}`: {text}" for code, text in content))
        parts.append("")
    return "\n".join(parts)


def report_html(rows: list[dict[str, Any]], info: dict[str, Any],
                figure_paths: dict[str, dict[str, Path]], title: str = "ltx results") -> str:
    """results.html: one page that opens anywhere, offline (figures embedded as data URIs)."""
    parts: list[str] = []
    for kind, content in outline(rows, info, figure_paths):
        if kind in ("h1", "h2", "h3", "p"):
            parts.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "table":
            parts.append(_html_table(content))
        elif kind == "grid":
            header, grid_rows = content
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in grid_rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "figure":
            caption, path = content
            parts.append(f'<figure><img src="{data_uri(path)}" alt="{html.escape(caption)}"></figure>')
        else:
            items = (f"<li><code>{html.escape(code)}</code>: {html.escape(text)}</li>"
                     for code, text in content)
            parts.append(f"<ul>{''.join(items)}</ul>")
    return html_page(title, "\n".join(parts))


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child { text-align: left; } thead th { background: #f3f3f3; }
td.best { font-weight: bold; background: #e8f5e9; }
tr.unranked th, tr.unranked td { font-style: italic; color: #555; }
figure { margin: .5em 0 1.5em; } figure img { max-width: 100%; border: 1px solid #eee; }
.meta { color: #666; font-size: .9em; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(900px, 1fr)); gap: 1em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: .6em; }
.card img { width: 100%; }
"""


def html_page(title: str, body: str) -> str:
    """A complete HTML page with the shared style; nothing is fetched from elsewhere."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>{html.escape(title)}</title><meta name="viewport" content="width=device-width, '
            f'initial-scale=1"><style>{CSS}</style></head><body>\n{body}\n</body></html>\n')


def data_uri(path: Path) -> str:
    """A PNG as a data URI, so a page carries its images."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def write_html_report(run_dir: Path, rows: list[dict[str, Any]], info: dict[str, Any],
                      backbones: list[str]) -> Path:
    """Write results.html from the results and the figures already in `run_dir`."""
    path = run_dir / "results.html"
    page = report_html(rows, info, {b: figures(run_dir, b) for b in backbones},
                       title=f"ltx results: {run_dir.name}")
    atomic_write(path, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return path


def write_report(run_dir: Path, rows: list[dict[str, Any]], curves: dict[tuple[str, str, str, str], list[float]],
                 info: dict[str, Any], store: MapStore, instances: Subset, backbones: list[str],
                 num_examples: int = 6) -> Path:
    """results.md, results.html, curves.json and each backbone's figures; the tables are printed.
    Returns the path of results.html (the run's summary points to it)."""
    write_json(run_dir / "curves.json", {"/".join(k): v for k, v in curves.items()})
    for backbone in backbones:
        map_grid(run_dir / FIGURES["example maps"].format(backbone), store, backbone, instances, num_examples)
        curve_plot(run_dir / FIGURES["perturbation curves"].format(backbone), curves, backbone)
    text = markdown(rows, info, {b: figures(run_dir, b) for b in backbones})
    atomic_write(run_dir / "results.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    page = write_html_report(run_dir, rows, info, backbones)
    print(markdown(rows, info), flush=True)
    return page


# --- experiment trackers ---------------------------------------------------------------------------

def log_results(loggers: Sequence[Any], run_dir: Path, rows: list[dict[str, Any]],
                curves: dict[tuple[str, str, str, str], list[float]], backbones: list[str]) -> None:
    """Send the results to the wandb loggers among `loggers` (training losses they log themselves):
    the metric table, the curves as a table, the figures as images, every metric in the summary.
    The wandb run is then finished, so that the next job of a multirun starts its own."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        import wandb

        run = wandb.run or logger.experiment  # the run the training stages logged to, if still open
        curve_rows = [[*key, step, fraction, value] for key, values in curves.items()
                      for step, (fraction, value) in enumerate(zip(curve_fractions(len(values)), values))]
        payload: dict[str, Any] = {
            "results": wandb.Table(columns=list(RESULT_COLUMNS),
                                   data=[[r[c] for c in RESULT_COLUMNS] for r in rows]),
            "curves": wandb.Table(columns=[*RESULT_COLUMNS[:4], "step", "fraction", "value"],
                                  data=curve_rows),
        }
        for backbone in backbones:
            for caption, path in figures(run_dir, backbone).items():
                payload[f"{caption.replace(' ', '_')}/{backbone}"] = wandb.Image(str(path), caption=caption)
        run.log(payload)
        run.summary.update({"/".join(str(r[c]) for c in RESULT_COLUMNS[:4]): r["value"] for r in rows})
        log.info("results logged to wandb run %s (%s)", run.id, run.dir)
        run.finish()


# --- `ltx explain`: an index page ----------------------------------------------------------------

def explanations_index(path: Path, records: list[dict[str, Any]], header: str) -> None:
    """index.html of `ltx explain`: a card per image (its figure beside the page, links to the raw maps)."""
    cards = []
    for r in records:
        flag = f" · <b>degenerate mask: {html.escape(r['degenerate'])}</b>" if r.get("degenerate") else ""
        files = " · ".join(f'<a href="{html.escape(r[k])}">{k}</a>' for k in ("safetensors", "npy"))
        cards.append(
            f'<div class="card"><a href="{html.escape(r["figure"])}"><img src="{html.escape(r["figure"])}" '
            f'alt="{html.escape(r["image"])}"></a><div><b>{html.escape(Path(r["image"]).name)}</b> '
            f'({r["width"]}×{r["height"]}): class {r["class"]} <i>{html.escape(r["class_name"])}</i>, '
            f'p = {r["probability"]:.3f}, mask area {r["mask_area"]:.0%}{flag}</div>'
            f'<div class="meta">{html.escape(r["image"])} · raw map: {files}</div></div>')
    body = (f"<h1>LTX explanations</h1><p class=meta>{html.escape(header)}</p>"
            f"<div class=cards>{''.join(cards)}</div>")
    atomic_write(path, lambda tmp: tmp.write_text(html_page("LTX explanations", body), encoding="utf-8"))

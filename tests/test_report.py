"""Reports of a run: results.md / results.html (tables, curves, map grids), wandb (offline), progress."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import Subset

from ltx.data.shapes import ShapesDataset
from ltx.progress import track
from ltx.report import log_results, markdown, report_html, write_report
from ltx.store import MapKey, MapStore
from tests.helpers import compose_config

ROWS = [{"backbone": "vit", "method": method, "class_mode": mode, "metric": metric, "value": value}
        for method, pos, ins in [("ltx", 10.0, 80.0), ("random <b>", 30.0, 50.0)]
        for mode in ("predicted", "target")
        for metric, value in [("pos", pos), ("ins", ins)]]
INFO = {"blackbox_accuracy": {"vit": 0.975}, "settings": {"vit/ltx/predicted": "steps=25 select_by=last"}}
CURVES = {("vit", method, mode, metric): [1.0, 0.5, 0.25] for method in ("ltx", "random <b>")
          for mode in ("predicted", "target") for metric in ("pos", "ins")}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory with saved maps of two methods for three shapes instances; writes the report."""
    instances = Subset(ShapesDataset(3, seed=0, image_size=16), [0, 1, 2])
    store = MapStore(tmp_path / "maps")
    for method in ("ltx", "random <b>"):
        zeros = torch.zeros(3, dtype=torch.long)
        store.write(MapKey("vit", method, "predicted"),
                    {"index": torch.arange(3), "maps": torch.rand(3, 16, 16), "classes": zeros,
                     "labels": zeros})
    write_report(tmp_path, ROWS, CURVES, INFO, store, instances, ["vit"], num_examples=2)
    return tmp_path


def test_markdown_tables_mark_the_best_and_link_the_figures(run_dir):
    text = (run_dir / "results.md").read_text()
    assert "Black-box test accuracy: 97.50 %" in text
    assert "| method | pos ↓ | ins ↑ |" in text
    assert "| ltx | **10** | **80** |" in text and "| random <b> | 30 | 50 |" in text
    assert text.count("### predicted class") == 1 and text.count("### target class") == 1
    assert "![perturbation curves, vit](curves_vit.png)" in text
    assert "![example maps, vit](maps_vit.png)" in text
    assert "- `vit/ltx/predicted`: steps=25 select_by=last" in text
    assert "![" not in markdown(ROWS, INFO)  # what is printed at the end: the tables only


def test_html_report_is_self_contained_with_tables_curves_and_maps(run_dir):
    page = (run_dir / "results.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing is fetched, nothing needs a file beside the page: every src/href is a data URI or an anchor
    assert not re.search(r"""(src|href)=["']?(https?:|//|[^"'#d])""", page)
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([^"]+)"', page)
    assert [alt for _, alt in images] == ["perturbation curves, vit", "example maps, vit"]
    assert all(len(data) > 1000 for data, _ in images)
    assert "<td class=best>10</td><td class=best>80</td>" in page
    assert "<th>random &lt;b&gt;</th><td>30</td>" in page  # method names are escaped
    assert page.count("<table>") == 2 and "<th>pos ↓</th><th>ins ↑</th>" in page
    assert "<li><code>vit/ltx/predicted</code>: steps=25 select_by=last</li>" in page


def test_the_oracle_is_shown_last_marked_and_never_ranked_and_the_validity_block_is_printed():
    rows = ROWS + [{"backbone": "vit", "method": "gt_mask", "class_mode": mode, "metric": metric, "value": value}
                   for mode in ("predicted", "target") for metric, value in (("pos", 5.0), ("ins", 90.0))]
    validity = {"vit": {"class_mode": "predicted", "passed": False, "failed": ["pos"], "checks": [
        dict(metric="pos", oracle=32.8, random=31.7, bound=15.85, rule="<= 0.5 x random", passed=False,
             required=True),
        dict(metric="road_lerf_acc", oracle=80.0, random=75.0, bound=90.0, rule=">= random + 15", passed=False,
             required=False)]}}
    info = {**INFO, "unranked": {"gt_mask": "reference: uses the ground truth"}, "benchmark_validity": validity}
    text = markdown(rows, info)
    assert "| ltx | **10** | **80** |" in text  # the oracle's better values are not the best
    assert text.index("| ltx |") < text.index("| *gt_mask (reference: uses the ground truth)* | 5 | 90 |")
    assert "### Benchmark validity" in text and "FAILED on pos: the ground-truth mask does not beat" in text
    assert "| pos | 32.8 | 31.7 | <= 0.5 x random | NO |" in text
    assert "| road_lerf_acc | 80 | 75 | shown only (>= random + 15) | no |" in text
    page = report_html(rows, info, {})
    assert "<tr class=unranked><th>gt_mask (reference: uses the ground truth)</th><td>5</td>" in page
    assert "<td>32.8</td><td>31.7</td>" in page


def test_html_report_without_figures_still_shows_the_tables():
    page = report_html(ROWS, INFO, {})
    assert "<table>" in page and "<img" not in page


def test_wandb_gets_tables_curves_and_images_offline(run_dir, tmp_path, monkeypatch):
    """logger=wandb as configured, offline: nothing leaves the machine, everything is in the run folder."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("LTX_WANDB_OFFLINE", raising=False)
    cfg = compose_config(["logger=wandb", f"paths.output_dir={tmp_path}"])
    assert cfg.logger.wandb.offline is True  # the config's default, whatever WANDB_MODE says
    logger = instantiate(cfg.logger.wandb)
    log_results([logger], run_dir, ROWS, CURVES, ["vit"])
    (offline_run,) = (tmp_path / "wandb").glob("offline-run-*")
    assert len(list(offline_run.glob("*.wandb"))) == 1
    media = offline_run / "files" / "media"
    assert {p.name.split("_")[0] for p in (media / "table").glob("*.table.json")} == {"results", "curves"}
    assert len(list((media / "images").rglob("*.png"))) == 2  # curves and map grid
    table = json.loads(next((media / "table").glob("results_*.table.json")).read_text())
    assert table["columns"] == ["backbone", "method", "class_mode", "metric", "value"]
    assert ["vit", "ltx", "predicted", "pos", 10.0] in table["data"]


def test_other_loggers_are_left_alone(run_dir, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    log_results([CSVLogger(tmp_path / "logs")], run_dir, ROWS, CURVES, ["vit"])
    assert not (tmp_path / "logs").exists()


def test_progress_counts_and_quiet_mode(capsys, monkeypatch):
    assert list(track(iter(range(5)), "evaluate x", total=5)) == list(range(5))
    err = capsys.readouterr().err
    assert "evaluate x" in err and "5/5" in err
    monkeypatch.setenv("LTX_QUIET", "1")
    assert list(track(range(5), "evaluate y")) == list(range(5))
    assert "evaluate y" not in capsys.readouterr().err

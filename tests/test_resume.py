"""A run killed after some instances, restarted on the same directory, reuses the pretrained
explainer, skips the saved instances and ends with the numbers of an uninterrupted run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from ltx.pipeline import run_pipeline
from ltx.stages.explain import MapWriter
from ltx.store import MapKey, MapStore, read_results
from tests.helpers import Killed, compose_config, tiny_vit

# 4 instances in 2 loader batches, so a run can stop between them
RESUME = tiny_vit("method=[ltx,ltx_pretrained,gradcam]", "method.ltx.steps=2", "explain.batch_size=2")


def run(out: Path, cache_dir: Path) -> list[dict]:
    cfg = compose_config([*RESUME, f"paths.output_dir={out}", f"paths.cache_dir={cache_dir}"])
    run_pipeline(cfg)
    return read_results(out / "results.csv")


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_numbers(tmp_path: Path, cache_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    whole = run(tmp_path / "whole", cache_dir)

    out = tmp_path / "killed"
    write = MapWriter.write_on_batch_end

    def write_then_die(self, *args, **kwargs) -> None:
        write(self, *args, **kwargs)
        raise Killed("after the first batch of maps")

    with monkeypatch.context() as patch:
        patch.setattr(MapWriter, "write_on_batch_end", write_then_die)
        with pytest.raises(Killed):
            run(out, cache_dir)
    explainer = out / "explainers" / "textures_vit" / "predicted.safetensors"
    first = list((out / "maps" / "textures_vit" / "ltx" / "predicted").glob("*.safetensors"))
    assert explainer.is_file() and len(first) == 1 and not (out / "results.csv").exists()
    before = {p: p.stat().st_mtime_ns for p in [explainer, *first]}

    with caplog.at_level(logging.INFO, logger="ltx"):
        resumed = run(out, cache_dir)
    assert "explainer textures_vit/predicted: reusing" in caplog.text
    assert "maps textures_vit/ltx/predicted: 2 instances (2 already saved)" in caplog.text
    assert before == {p: p.stat().st_mtime_ns for p in before}  # neither pretrained nor finetuned again

    store, reference = MapStore(out / "maps"), MapStore(tmp_path / "whole" / "maps")
    for method in ("ltx", "ltx_pretrained", "gradcam"):
        key = MapKey("textures_vit", method, "predicted")
        assert len(store.done(key)) == 4
        torch.testing.assert_close(store.load(key)["maps"], reference.load(key)["maps"], atol=1e-5, rtol=1e-4)
    assert [(r["method"], r["metric"]) for r in resumed] == [(r["method"], r["metric"]) for r in whole]
    torch.testing.assert_close(torch.tensor([r["value"] for r in resumed]),
                               torch.tensor([r["value"] for r in whole]), atol=1e-4, rtol=0)

"""Pipeline stages on tiny inputs, without a whole run."""

import logging

import torch

from ltx.pipeline import Evaluation, evaluate, instance_ids, prepare_data
from ltx.store import MapKey, MapStore
from tests.helpers import compose_config, tiny_explained, tiny_vit


def test_failed_instances_are_counted_and_left_out_of_the_metrics(tmp_path):
    cfg = compose_config(tiny_vit("explain.num_images=4", "eval=shapes"))
    _, instances = prepare_data(cfg)
    ids = torch.tensor(instance_ids(instances))
    maps = torch.rand(len(ids), 64, 64, generator=torch.Generator().manual_seed(0))
    explained = tiny_explained("ltx_shapes_vit")
    store = MapStore(tmp_path)
    failed = torch.tensor([False, False, True, True])
    with_nan = maps.clone()
    with_nan[failed] = float("nan")
    labels = torch.zeros(len(ids), dtype=torch.long)
    store.write(MapKey("shapes_vit", "ltx", "predicted"),
                {"index": ids, "maps": with_nan, "classes": labels, "labels": labels, "failed": failed})
    # the same maps of the instances that did not fail, saved as if only those were explained
    store.write(MapKey("shapes_vit", "ref", "predicted"),
                {"index": ids, "maps": maps, "classes": labels, "labels": labels})
    cfg.eval.batch_size = 2  # the second batch has failed instances only: skipped
    result = Evaluation()
    evaluate(cfg, store, "shapes_vit", explained, instances, result)
    rows = {(r["method"], r["metric"]): r["value"] for r in result.rows}
    assert rows[("ltx", "failed")] == 2 and ("ref", "failed") not in rows
    assert all(value == value for value in rows.values())  # no NaN reached a metric

    kept = torch.utils.data.Subset(instances.dataset, [instances.indices[i] for i in (0, 1)])
    alone = Evaluation()
    evaluate(cfg, store, "shapes_vit", explained, kept, alone)
    expected = {(r["method"], r["metric"]): r["value"] for r in alone.rows if r["method"] == "ref"}
    for (method, metric), value in expected.items():
        assert abs(rows[("ltx", metric)] - value) < 1e-9, metric


def test_an_image_size_the_black_box_was_not_built_for_fails_before_any_work(tmp_path):
    import pytest

    from ltx.pipeline import run_pipeline

    cfg = compose_config(tiny_vit("data.image_size=48", f"hydra.run.dir={tmp_path}"))
    cfg.paths.output_dir = str(tmp_path)
    with pytest.raises(ValueError, match="shapes_vit expects 64px images but data.image_size is 48"):
        run_pipeline(cfg)
    assert not any(tmp_path.iterdir())  # nothing trained or written


def test_lightning_device_lines_are_logged_once_and_its_advert_never() -> None:
    from ltx.pipeline import _DevicesOnce

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, __file__, 1, message,
                                 None, None)

    once = _DevicesOnce()
    messages = ["GPU available: False, used: False", "💡 Tip: try litlogger", "`Trainer.fit` stopped",
                "GPU available: False, used: False", "`Trainer.fit` stopped"]
    assert [once.filter(record(m)) for m in messages] == [True, False, True, False, True]

"""Pipeline stages on tiny inputs, without a whole run."""

import logging
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from ltx.data import instance_ids
from ltx.lit.pretrain import PretrainModule
from ltx.pipeline import prepare_data
from ltx.stages.checks import check_config
from ltx.stages.evaluate import Evaluation, evaluate
from ltx.stages.pretrain import pretrain_explainer, pretraining_plan
from ltx.stages.summary import RunSummary, duration
from ltx.store import MapKey, MapStore
from tests.helpers import Killed, compose_config, tiny_explained, tiny_vit


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
    store.write(MapKey("textures_vit", "ltx", "predicted"),
                {"index": ids, "maps": with_nan, "classes": labels, "labels": labels, "failed": failed})
    # the same maps of the instances that did not fail, saved as if only those were explained
    store.write(MapKey("textures_vit", "ref", "predicted"),
                {"index": ids, "maps": maps, "classes": labels, "labels": labels})
    cfg.eval.batch_size = 2  # the second batch has failed instances only: skipped
    result = Evaluation()
    evaluate(cfg, store, "textures_vit", explained, instances, result)
    rows = {(r["method"], r["metric"]): r["value"] for r in result.rows}
    assert rows[("ltx", "failed")] == 2 and ("ref", "failed") not in rows
    assert all(value == value for value in rows.values())  # no NaN reached a metric

    kept = torch.utils.data.Subset(instances.dataset, [instances.indices[i] for i in (0, 1)])
    alone = Evaluation()
    evaluate(cfg, store, "textures_vit", explained, kept, alone)
    expected = {(r["method"], r["metric"]): r["value"] for r in alone.rows if r["method"] == "ref"}
    for (method, metric), value in expected.items():
        assert abs(rows[("ltx", metric)] - value) < 1e-9, metric


def test_an_image_scored_before_with_the_same_map_is_reused_and_results_equal_fresh_ones(tmp_path, caplog):
    # the black-pixel and ROAD curves (POS and DEL sharing runs) and a localization metric
    cfg = compose_config(tiny_vit("explain.num_images=4", "eval=shapes",
                                  "eval.metrics=[pos,del,road_morf_acc,road_morf_prob,pointing_game]"))
    _, instances = prepare_data(cfg)
    ids = torch.tensor(instance_ids(instances))
    maps = torch.rand(len(ids), 64, 64, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(len(ids), dtype=torch.long)
    explained = tiny_explained("ltx_shapes_vit")
    forwarded = []  # sizes of the black box's input batches
    explained.register_forward_pre_hook(lambda module, args: forwarded.append(len(args[0])))
    partly = maps.clone()
    partly[1::2] = partly[1::2].flip(-1)  # instances 1 and 3 get other maps, 0 and 2 keep theirs
    reversed_order = torch.arange(len(ids)).flip(0)
    random, other = MapKey("textures_vit", "random", "predicted"), MapKey("textures_vit", "other", "target")
    written = {random: (ids, maps), other: (ids, partly),
               # the same maps saved in another instance order: every image reused, the same results
               MapKey("textures_vit", "random", "target"): (ids[reversed_order], maps[reversed_order])}
    store = MapStore(tmp_path)
    for key, (index, saved) in written.items():
        store.write(key, {"index": index, "maps": saved, "classes": labels, "labels": labels})
    alone, alone_forwarded = {}, {}
    for key in (random, other):  # each evaluated in a store of its own
        single = MapStore(tmp_path / "single" / key.method / key.class_mode)
        single.write(key, {"index": written[key][0], "maps": written[key][1], "classes": labels, "labels": labels})
        forwarded.clear()
        alone[key] = Evaluation()
        evaluate(cfg, single, "textures_vit", explained, instances, alone[key])
        alone_forwarded[key] = sum(forwarded)
    alone[MapKey("textures_vit", "random", "target")] = Evaluation(
        [{**row, "class_mode": "target"} for row in alone[random].rows],
        {(*k[:2], "target", k[3]): v for k, v in alone[random].curves.items()})

    forwarded.clear()
    result = Evaluation()
    with caplog.at_level(logging.INFO, logger="ltx"):
        evaluate(cfg, store, "textures_vit", explained, instances, result)
    per_image = alone_forwarded[random] / len(ids)
    assert alone_forwarded[other] == alone_forwarded[random] > 0
    # the store's order: other/target's 4 images, random/predicted's 2 not scored with other/target
    assert sum(forwarded) == per_image * (len(ids) + 2)
    assert "random/predicted: 2 of 4 images scored before, reused" in caplog.text
    assert "random/target: 4 of 4 images scored before, reused" in caplog.text
    # A reused image's curve is the one computed in another batch (of 2 images here, 4 alone): a
    # float32 forward may round differently by batch size on some CPUs, so the values (AUC x 100 of
    # float32 probabilities) agree to float32 rounding, not necessarily bit for bit.
    close = dict(rel=1e-5, abs=1e-4)
    for key, expected in alone.items():
        rows = [r for r in result.rows if (r["method"], r["class_mode"]) == (key.method, key.class_mode)]
        assert [{**r, "value": None} for r in rows] == [{**r, "value": None} for r in expected.rows]
        assert [r["value"] for r in rows] == pytest.approx([r["value"] for r in expected.rows], **close)
        curves = {k: v for k, v in result.curves.items() if k[1:3] == (key.method, key.class_mode)}
        assert curves.keys() == expected.curves.keys()
        for curve_key, curve in curves.items():
            assert curve == pytest.approx(expected.curves[curve_key], **close)


def test_an_image_size_the_black_box_was_not_built_for_fails_before_any_work(tmp_path):
    from ltx.pipeline import run_pipeline

    cfg = compose_config(tiny_vit("data.image_size=48", f"hydra.run.dir={tmp_path}"))
    cfg.paths.output_dir = str(tmp_path)
    with pytest.raises(ValueError, match="textures_vit expects 64px images but data.image_size is 48"):
        run_pipeline(cfg)
    assert not any(tmp_path.iterdir())  # nothing trained or written


@pytest.mark.parametrize("overrides, named", [
    (["eval=shapes"], "eval.metrics: pointing_game"),
    (["backbone=custom"], "eval.metrics: pointing_game"),  # a user's model on their folder, the default eval
    (["eval=paper", "method=[ltx,gt_mask]"], "method: gt_mask"),
    (["eval=paper", "+eval.references=[gt_mask]"], "eval.references: gt_mask"),
])
def test_ground_truth_asked_for_on_data_without_masks_fails_before_any_work(overrides, named):
    cfg = compose_config(["data=imagenet", "data.root=/nowhere", *overrides])
    with pytest.raises(ValueError, match=f"{named}.* need ground-truth masks.*choose eval=paper") as err:
        check_config(cfg)
    assert "\n" not in str(err.value)
    check_config(compose_config(["data=imagenet", "data.root=/nowhere", "eval=paper"]))  # the fix works


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_a_gpu_trainer_where_no_gpu_is_visible_fails_before_any_work(trainer, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="trainer.accelerator=gpu, but no GPU is visible on this machine: use "
                                         "trainer=cpu"):
        check_config(compose_config([f"trainer={trainer}"]))
    check_config(compose_config(["trainer=cpu"]))


def test_lightning_device_lines_are_logged_once_and_its_advert_never() -> None:
    from ltx.stages.runtime import _DevicesOnce

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, __file__, 1, message,
                                 None, None)

    once = _DevicesOnce()
    messages = ["GPU available: False, used: False", "💡 Tip: try litlogger", "`Trainer.fit` stopped",
                "GPU available: False, used: False", "`Trainer.fit` stopped"]
    assert [once.filter(record(m)) for m in messages] == [True, False, True, False, True]


def test_more_images_to_explain_than_the_split_has_explains_the_split_with_a_warning(caplog):
    cfg = compose_config(tiny_vit("explain.num_images=100"))  # the tiny test split has 64 images
    with caplog.at_level(logging.WARNING, logger="ltx.pipeline"):
        _, instances = prepare_data(cfg)
    assert len(instances) == 64
    assert "explain.num_images=100 is more than the 64 images of the test split" in caplog.text


def test_a_lightning_line_is_printed_once_where_the_application_configured_logging() -> None:
    """As under Hydra's job logging: the root logger has a console handler before Lightning is imported."""
    code = ("import logging, sys\n"
            "logging.basicConfig(stream=sys.stdout, level=logging.INFO, format='[%(name)s] %(message)s')\n"
            "import lightning as L\n"
            "import ltx.stages.runtime\n"
            "L.seed_everything(0)\n"
            "L.Trainer(accelerator='cpu', devices=1, logger=False)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert console.count("Seed set to 0") == 1, console
    assert console.count("GPU available: False") == 1, console
    assert "[lightning.fabric.utilities.seed] Seed set to 0" in proc.stdout  # through the application's handler


@pytest.mark.parametrize("methods, users", [
    ("[random,gradcam]", []),
    ("[ltx,ltx_pretrained,random]", ["ltx", "ltx_pretrained"]),
])
def test_explainers_are_pretrained_only_for_the_methods_built_on_one(methods, users, caplog):
    cfg = compose_config([f"method={methods}", "backbone=[textures_vit,textures_resnet]"])
    with caplog.at_level(logging.INFO, logger="ltx.stages.pretrain"):
        assert pretraining_plan(cfg) == users
    if users:
        assert ("pretraining: an explainer per class mode (predicted, target) of textures_vit, textures_resnet, "
                "for ltx, ltx_pretrained") in caplog.text
    else:  # the references (gt_mask, random) need none either
        assert "pretraining: none, no method of this run is built on a pretrained explainer (random, gradcam, " \
               "gt_mask" in caplog.text


def test_a_run_ends_with_the_time_and_work_of_each_stage_and_where_its_report_is(tmp_path, caplog):
    summary = RunSummary(tmp_path)
    with summary.stage("pretrain") as stage:
        stage.note = "explainers of textures_vit (predicted)"
    for _ in range(2):  # entered per backbone: one row
        with summary.stage("explain") as stage:
            stage.note = "map sets: 2"
    with caplog.at_level(logging.INFO, logger="ltx.stages.summary"):
        summary.log(tmp_path / "results.html")
    rows = re.findall(r"^ (\w+) +(\d+\.\d s)(?: +(.*))?$", caplog.text, flags=re.MULTILINE)
    assert [(stage, note) for stage, _, note in rows] == [("pretrain", "explainers of textures_vit (predicted)"),
                                                          ("explain", "map sets: 2"), ("total", "")]
    assert f"results in {tmp_path}" in caplog.text and f"report: {tmp_path / 'results.html'}" in caplog.text
    assert duration(3.21) == "3.2 s" and duration(3725) == "1:02:05"


def _pretrain(cfg, out) -> dict[str, torch.Tensor]:
    """The tiny ViT's predicted-class explainer pretrained into run directory `out`, as saved."""
    datamodule, _ = prepare_data(cfg)
    pretrain_explainer(cfg, out, "textures_vit", tiny_explained("ltx_shapes_vit"), datamodule, "predicted")
    return load_file(out / "explainers" / "textures_vit" / "predicted.safetensors")


def _last_epoch(out) -> int:
    """The epoch (from 0) of the checkpoint a pretraining in `out` would resume from."""
    last = out / "checkpoints" / "textures_vit" / "predicted" / "last.ckpt"
    return torch.load(last, weights_only=True)["epoch"]


def _epochs_run(patience: str, out) -> int:
    """Pretrain with lr 0 (the validation POS never improves) for at most 4 epochs; epochs run."""
    cfg = compose_config(tiny_vit("pretrain.epochs=4", "pretrain.lr=0", f"pretrain.patience={patience}"))
    _pretrain(cfg, out)
    return _last_epoch(out) + 1


def test_pretraining_stops_after_patience_epochs_without_improvement(tmp_path):
    assert _epochs_run("1", tmp_path / "patience1") == 2
    assert _epochs_run("2", tmp_path / "patience2") == 3
    assert _epochs_run("null", tmp_path / "paper") == 4  # the paper: every epoch


def test_a_patience_below_one_is_refused_before_any_work():
    for patience in ("0", "-1", "1.5"):
        with pytest.raises(ValueError, match=rf"pretrain.patience={patience}: give a number of epochs >= 1"):
            check_config(compose_config([f"pretrain.patience={patience}"]))
    check_config(compose_config(["pretrain.patience=null"]))


def test_pretraining_killed_after_an_epoch_resumes_to_the_uninterrupted_explainer(tmp_path, monkeypatch):
    cfg = compose_config(tiny_vit("pretrain.epochs=3", "pretrain.patience=null", "pretrain.monitor=val/loss"))
    whole = _pretrain(cfg, tmp_path / "whole")

    def die_after_the_second_epoch(self) -> None:
        if self.current_epoch == 2:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(PretrainModule, "on_train_epoch_start", die_after_the_second_epoch, raising=False)
        with pytest.raises(Killed):
            _pretrain(cfg, tmp_path / "killed")
    assert _last_epoch(tmp_path / "killed") == 1  # the latest epoch, not the best one
    resumed = _pretrain(cfg, tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key])

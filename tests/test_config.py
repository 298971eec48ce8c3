"""Every option of every config group composes and instantiates (as lightning-hydra-template does)."""

from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from hydra.utils import instantiate

from ltx.losses import LTXLoss
from ltx.masking import Masking
from ltx.methods.ltx import LTX
from tests.helpers import CONF_DIR, compose_config

GROUPS = ["backbone", "data", "explainer", "masking", "loss", "method", "pretrain", "callbacks", "finetune", "eval",
          "trainer", "logger", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_default_config_composes():
    cfg = compose_config()
    assert list(cfg.backbone) == ["textures_vit", "textures_resnet"]
    assert set(cfg.method) >= {"ltx", "ltx_pretrained", "random"}
    assert list(cfg.class_modes) == ["predicted", "target"]


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group, option):
    prefix = "+" if group == "experiment" else ""
    cfg = compose_config([f"{prefix}{group}={option}"])
    if group in ("masking", "loss"):
        assert isinstance(instantiate(cfg[group]), (Masking, LTXLoss))
    if group == "backbone":
        assert list(cfg.backbone) == [option]
    if group == "method":  # a partial of its class (tests/methods build each with a model)
        assert callable(instantiate(cfg.method[option])), option
    if group == "data" and option == "shapes":
        assert instantiate(cfg.data).image_size == 64


def test_method_configs_are_partials_of_methods():
    cfg = compose_config()
    for name, method in cfg.method.items():
        factory = instantiate(method)
        assert callable(factory), name
    assert instantiate(cfg.method.ltx_pretrained).keywords["steps"] == 0
    assert instantiate(cfg.method.ltx).func is LTX


def test_every_ltx_variant_reads_how_finetuning_runs_from_one_place():
    """ltx_pretrained and ltx_sel compose ltx, whose cost settings read `finetune`: one override reaches
    them all; an override of one variant's copy, which would not reach the others, is refused."""
    from ltx.stages.checks import check_config

    cfg = compose_config(["method=[ltx,ltx_pretrained,ltx_sel]", "finetune.precision=bf16", "finetune.scope=head"])
    for name in ("ltx", "ltx_pretrained", "ltx_sel"):
        assert cfg.method[name].precision == "bf16" and cfg.method[name].scope == "head", name
    assert (cfg.method.ltx_sel.select_by, cfg.method.ltx_sel.lr, cfg.method.ltx_sel.steps) == ("pos", 2e-3, 25)
    assert cfg.method.ltx_pretrained.steps == 0 and cfg.method.ltx.steps == 25
    check_config(cfg)
    with pytest.raises(ValueError, match="method.ltx.precision=bf16 reaches ltx only.*finetune.precision=bf16"):
        check_config(compose_config(["method=[ltx,ltx_sel]", "method.ltx.precision=bf16"]))
    check_config(compose_config(["method=[ltx,gradcam]", "method.ltx.precision=bf16"]))  # nothing left out


def test_pretraining_module_optimiser_and_callbacks_come_from_the_config(tmp_path):
    """As in lightning-hydra-template: the module and its optimiser from `pretrain.module`, the
    trainer's callbacks from the `callbacks` group, each swappable from the command line."""
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from ltx.lit.pretrain import PretrainModule
    from ltx.masking import ConstantBaseline
    from ltx.models.explainer import build_explainer
    from ltx.stages.checks import check_config
    from ltx.stages.pretrain import pretrain_callbacks, pretrain_module
    from tests.helpers import tiny_explained

    explained = tiny_explained("ltx_shapes_resnet")

    def optimiser(overrides: list[str]) -> torch.optim.Optimizer:
        module = pretrain_module(compose_config(overrides), explained, build_explainer(explained), ConstantBaseline(),
                                 LTXLoss(), "predicted", validate=False)
        assert isinstance(module, PretrainModule)
        return module.make_optimizer([torch.nn.Parameter(torch.zeros(1))])

    adamw = optimiser(["pretrain.lr=0.01"])
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 0.01
    assert adamw.defaults["weight_decay"] == 0.01
    sgd = ["pretrain.module.optimizer._target_=torch.optim.SGD", "~pretrain.module.optimizer.weight_decay"]
    assert isinstance(optimiser(sgd), torch.optim.SGD)

    callbacks = pretrain_callbacks(compose_config(), tmp_path)
    assert list(callbacks) == ["best", "last", "early_stopping"]
    assert all(Path(c.dirpath) == tmp_path for c in callbacks.values() if isinstance(c, ModelCheckpoint))
    assert callbacks["best"].monitor == "val/pos" and isinstance(callbacks["early_stopping"], EarlyStopping)
    assert callbacks["early_stopping"].patience == 1
    assert "early_stopping" not in pretrain_callbacks(compose_config(["pretrain.patience=null"]), tmp_path)
    extra = "+callbacks.lr_monitor._target_=lightning.pytorch.callbacks.LearningRateMonitor"
    assert "lr_monitor" in pretrain_callbacks(compose_config([extra]), tmp_path)
    with pytest.raises(ValueError, match="callbacks.best must be a ModelCheckpoint"):
        check_config(compose_config(["callbacks.best._target_=lightning.pytorch.callbacks.LearningRateMonitor",
                                     "~callbacks.best.monitor", "~callbacks.best.mode", "~callbacks.best.save_top_k",
                                     "~callbacks.best.filename"]))


def test_the_default_is_the_textures_data_and_the_shapes_data_stays_an_option():
    cfg = compose_config()
    assert cfg.data._target_ == "ltx.data.TexturesDataModule" and cfg.eval.references == ["gt_mask", "random"]
    shapes = compose_config(["+experiment=shapes"])
    assert shapes.data._target_ == "ltx.data.ShapesDataModule"
    assert list(shapes.backbone) == ["shapes_vit", "shapes_resnet"]
    assert compose_config(["eval=shapes"]).eval == cfg.eval  # the suite's old name


def test_unknown_option_names_the_valid_choices():
    with pytest.raises(MissingConfigException) as err:
        compose_config(["backbone=vit_xxl"])
    assert "textures_vit" in str(err.value.options) or "textures_vit" in str(err.value)


def test_multiple_backbones_in_one_run():
    cfg = compose_config(["backbone=[textures_vit,vit_b]"])
    assert list(cfg.backbone) == ["textures_vit", "vit_b"]


@pytest.mark.parametrize("experiment", ["vit_b", "resnet101"])
def test_paper_experiments_keep_the_papers_settings(experiment):
    """The embedded default's own choices (mask weight, epochs, early stopping, finetuning lr,
    masking) stay out of them."""
    cfg = compose_config([f"+experiment={experiment}"])
    assert cfg.loss.mask_weight == 50 and cfg.pretrain.epochs == 30 and cfg.pretrain.lr == 2e-3
    assert cfg.pretrain.patience is None
    assert cfg.method.ltx.lr == 2e-3 and cfg.method.ltx.steps == 25 and cfg.method.ltx_sel.select_by == "pos"
    assert cfg.masking._target_ == "ltx.masking.ConstantBaseline" and cfg.masking.value == 0 and not cfg.masking.hard


@pytest.mark.parametrize("experiment", ["shapes", "shapes_vit", "shapes_resnet"])
def test_shapes_experiments_keep_the_settings_chosen_on_shapes(experiment):
    """The textures default's choices (black masking, mask weight 2.5, lr 2e-5) stay out of the
    former default, whose own were chosen on shapes validation images."""
    cfg = compose_config([f"+experiment={experiment}"])
    default = compose_config([])
    assert cfg.masking._target_ == "ltx.masking.MeanBaseline" and cfg.loss.mask_weight == 10.0
    assert cfg.method.ltx.lr == 2e-4 and cfg.method.ltx._target_ == default.method.ltx._target_
    assert default.masking._target_ == "ltx.masking.ConstantBaseline" and default.loss.mask_weight == 2.5
    assert default.method.ltx.lr == 2e-5


def test_cnn_full_is_the_default_method_list_plus_the_slow_cams():
    default, full = compose_config(), compose_config(["+experiment=cnn_full"])
    assert set(full.method) == set(default.method) | {"scorecam", "ablationcam", "fullgrad"}
    assert list(full.backbone) == list(default.backbone)
    cnn_only = compose_config(["+experiment=cnn_full", "backbone=textures_resnet"])
    assert list(cnn_only.backbone) == ["textures_resnet"]

"""Stage 1, the explained models: each backbone loaded (hub / file), random, or trained on the run's
data once and cached under `paths.cache_dir`, keyed by everything that decides its weights."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from ltx.lit import expected_lightning_warnings
from ltx.lit.classifier import ClassifierModule
from ltx.models.explained import ExplainedModel
from ltx.models.zoo import (
    WEIGHT_SOURCES,
    ModelSpec,
    Settings,
    cache_key,
    check_input_size,
    create_network,
    load_weights,
    save_network,
    wrap,
)
from ltx.stages.runtime import loader, make_trainer, rank_zero_view, seed_stage, train_loader

log = logging.getLogger(__name__)

#: data settings that change how the data is read, not what it is: not part of a black box's cache key
#: (`batch_size` is in configs saved before issue 15, which still find their black boxes)
LOADER_KEYS = ("batch_size", "num_workers", "_target_")


def backbone_settings(name: str) -> Settings:
    """The config keys of backbone `name`, for errors that say what to set there."""
    key = f"backbone.{name}"
    return Settings(name=f"{key}.name",
                    weights=f"{key}.weights=/path/to/model.safetensors (or hub, train, random)",
                    image_size=f"{key}.image_size=N", model_kwargs=f"{key}.model_kwargs")


def ensure_blackbox(cfg: DictConfig, name: str, spec: DictConfig, datamodule: L.LightningDataModule) -> ExplainedModel:
    """The explained model `name`: loaded (hub / file), random, or trained on the data once and cached."""
    if spec.image_size != datamodule.image_size:
        raise ValueError(f"backbone {name} expects {spec.image_size}px images but data.image_size is "
                         f"{datamodule.image_size}: set data.image_size={spec.image_size}.")
    weights, settings = str(spec.weights), backbone_settings(name)
    network = create_network(spec.name, num_classes=datamodule.num_classes,
                             weights="random" if weights == "train" else weights, settings=settings,
                             **(spec.model_kwargs or {}))
    check_input_size(network, spec.image_size, settings)
    explained = wrap(network, name=name, image_size=spec.image_size, mean=spec.mean, std=spec.std)
    if weights != "train":
        return explained
    if spec.get("train") is None:
        raise ValueError(f"backbone {name} has weights=train but no train recipe; choose weights from "
                         f"{WEIGHT_SOURCES} or a checkpoint path.")
    # The key covers the config (the train recipe and its augmentation included), what the training
    # code fixes, the architecture as built and the data as generated, so a change to any of them
    # trains a new black box instead of silently reusing a stale one.
    data_id = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k not in LOADER_KEYS}
    data_id.update({"class": cfg.data._target_, "fingerprint": data_fingerprint(datamodule.train_set)})
    key = cache_key({**OmegaConf.to_container(spec, resolve=True), "architecture": repr(network),
                     "recipe": ClassifierModule.RECIPE}, data_id)
    path = Path(cfg.paths.cache_dir) / "blackboxes" / f"{name}-{key}.safetensors"
    if rank_zero_view(path.is_file()):
        log.info("black box %s: cached weights %s", name, path)
        load_weights(network, path)
        return explained
    log.info("black box %s: training on %s (%d epochs), will cache to %s", name, cfg.data._target_,
             spec.train.epochs, path)
    seed = seed_stage(cfg, "blackbox", name)
    module = ClassifierModule(explained, lr=spec.train.lr, weight_decay=spec.train.weight_decay,
                              removal=spec.train.get("removal")).train()
    trainer = make_trainer(cfg, max_epochs=spec.train.epochs)
    with expected_lightning_warnings():
        trainer.fit(module, train_loader(cfg, trainer, datamodule.train_set, spec.train.batch_size, seed),
                    loader(cfg, datamodule.val_set, 256))
    explained.train(False).requires_grad_(False)
    if trainer.is_global_zero:
        kwargs = OmegaConf.to_container(spec.model_kwargs) if spec.model_kwargs else None
        save_network(path, network, ModelSpec(
            name=spec.name, image_size=spec.image_size, mean=tuple(explained.mean.flatten().tolist()),
            std=tuple(explained.std.flatten().tolist()), model_kwargs=kwargs))
    return explained


def data_fingerprint(dataset: Dataset, samples: int = 32) -> str:
    """A hash of the size, and of the pixels and labels of `samples` images spread over `dataset`."""
    digest = hashlib.sha256(str(len(dataset)).encode())
    for i in torch.linspace(0, len(dataset) - 1, min(samples, len(dataset))).long().unique().tolist():
        item = dataset[i]
        digest.update(item["image"].contiguous().numpy().tobytes())
        digest.update(str(int(item["label"])).encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def accuracy(cfg: DictConfig, explained: ExplainedModel, dataset: Dataset, batch_size: int = 256) -> float:
    """Top-1 accuracy of the black box on `dataset` (the report's and the validity check's context)."""
    hits = total = 0
    for batch in loader(cfg, dataset, batch_size):
        hits += int((explained.predict(batch["image"]) == batch["label"]).sum())
        total += len(batch["label"])
    return hits / max(total, 1)

"""What every stage uses: Trainers and loggers from the config, per-stage seeding, loaders, and the
process set-up (one process or DDP: see `ltx.pipeline`)."""

from __future__ import annotations

import logging
import zlib
from typing import Any, TypeVar

import lightning as L
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

T = TypeVar("T")


class _DevicesOnce(logging.Filter):
    """Lightning announces the devices, and advertises a product, for every Trainer it builds; a
    run builds one per stage, method and class mode: say the devices once, skip the advert."""

    ANNOUNCEMENTS = ("GPU available", "TPU available", "HPU available")

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("💡 Tip"):
            return False
        if not message.startswith(self.ANNOUNCEMENTS):
            return True
        new = message not in self.seen
        self.seen.add(message)
        return new


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DevicesOnce())


def _unless_root_logs(record: logging.LogRecord) -> bool:
    return not logging.getLogger().handlers


def _lightning_console_once() -> None:
    """`import lightning` gives the `lightning` logger a console handler of its own, and its records
    still propagate to the root logger: where an application configured logging (Hydra's job logging,
    which also writes the job's .log file), every Lightning line was printed twice. Lightning's own
    handler now stays silent while the root logger has handlers (the rule lightning.pytorch and
    lightning.fabric apply to theirs at import, applied at each record so the import order does not
    matter); without them (a script, `ltx explain`) it prints as before."""
    for handler in logging.getLogger("lightning").handlers:
        if _unless_root_logs not in handler.filters:
            handler.addFilter(_unless_root_logs)


_lightning_console_once()


def make_trainer(cfg: DictConfig, **overrides: Any) -> L.Trainer:
    """A Trainer from the `trainer` group; stages add what is theirs (epochs, callbacks, logger)."""
    kwargs = {"logger": False, "enable_checkpointing": False, **overrides}
    return instantiate(cfg.trainer, **kwargs)


def make_loggers(cfg: DictConfig, name: str) -> list:
    return [instantiate(conf, **({"name": name} if "name" in conf else {})) for conf in cfg.get("logger", {}).values()]


def loader(cfg: DictConfig, dataset: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
    """Batches of `dataset`, in order unless a `sampler` says otherwise, read by `data.num_workers`
    worker processes (0: in this one)."""
    workers = int(cfg.data.get("num_workers", 0))
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0, **kwargs)


def seed_stage(cfg: DictConfig, *names: str) -> int:
    """Seed every RNG for one stage from the run's seed and the stage's names: a stage's result then
    does not depend on which stages ran before it in this process or were reused from disk."""
    seed = (int(cfg.seed) * 1_000_003 + zlib.crc32("/".join(names).encode())) % 2**31
    L.seed_everything(seed, workers=True, verbose=False)
    return seed


def train_loader(cfg: DictConfig, trainer: L.Trainer, dataset: Dataset, batch_size: int, seed: int) -> DataLoader:
    """Shuffled batches of `batch_size` images in all, split over the trainer's processes.

    Epoch e visits DistributedSampler's permutation `randperm(n, seed + e)` for any number of
    processes W: one process gets a one-replica DistributedSampler; under DDP Lightning swaps the
    RandomSampler for a DistributedSampler seeded with PL_GLOBAL_SEED, which `seed_stage` sets to
    `seed`. Rank r's batch k is then every W-th image of the one-process batch k, and DDP's gradient
    average is the one-process gradient: the same training on 1 or W devices (n divisible by W).
    `batch_size` is a multiple of W (`check_processes`).
    """
    world_size = trainer.world_size
    if world_size == 1:
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    else:
        sampler = RandomSampler(dataset)
    return loader(cfg, dataset, batch_size // world_size, sampler=sampler)


# --- processes --------------------------------------------------------------------------------------

def world() -> tuple[int, int]:
    """(rank, number of processes): (0, 1) without DDP and before the first distributed trainer call."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_zero_view(value: T) -> T:
    """Rank 0's `value` on every rank. What a stage finds saved decides which trainer calls it makes,
    and every rank must make the same calls (they synchronise), so rank 0's reading of the run
    directory is the one all ranks follow."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def check_processes(cfg: DictConfig, trainer: L.Trainer, num_instances: int) -> None:
    """Refuse, before any work, a process set-up the pipeline cannot run (see `ltx.pipeline`)."""
    world_size = trainer.world_size
    if world_size == 1:
        return
    launcher = trainer.strategy.launcher
    if isinstance(launcher, _MultiProcessingLauncher):
        raise ValueError(f"trainer.strategy={cfg.trainer.get('strategy')} runs only the trainer calls in "
                         "its processes, but every stage of the pipeline runs on every rank: set "
                         "trainer.strategy=ddp.")
    relaunches = launcher is not None and not launcher.cluster_environment.creates_processes_externally
    if relaunches and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ValueError("trainer.strategy=ddp relaunches this command once per rank, which a Hydra "
                         "multirun cannot do: run each job on its own (python -m ltx.run ...) or use one "
                         "process per job.")
    if num_instances < world_size:
        raise ValueError(f"{num_instances} instances cannot be shared by {world_size} processes: set "
                         f"explain.num_images >= {world_size} or fewer trainer.devices.")
    for key in ("pretrain.batch_size", *(f"backbone.{name}.train.batch_size" for name in cfg.backbone)):
        value = OmegaConf.select(cfg, key)
        if value is not None and value % world_size:
            raise ValueError(f"{key}={value} is the batch in all, split over {world_size} processes: "
                             f"make it a multiple of {world_size}.")

"""Two-process DDP (gloo, CPU, 127.0.0.1) gives the values of one process on all the data."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from ltx.metrics import create_metric

NAMES = ("pos", "neg", "ins", "del", "ins_rise", "del_rise", "pointing_game", "energy_pointing_game",
         "gt_auroc", "road_morf_acc", "road_lerf_acc", "road_morf_prob", "road_lerf_prob", "sufficiency",
         "necessity")
WORLD = 2
SPLIT = 3  # rank 0 gets images [0, 3), rank 1 gets [3, 5): uneven on purpose


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, 3, 1, 1), 0.25))
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 3 * self.fc(F.relu(self.conv((x - self.mean) / self.std)).mean((2, 3)))


def make_data() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 10, 10, generator=g)
    maps = torch.rand(5, 5, 5, generator=g)
    labels = torch.randint(0, 3, (5,), generator=g)
    masks = torch.rand(5, 10, 10, generator=g) > 0.5
    return images, maps, labels, masks


def results(metrics: dict) -> dict[str, list[torch.Tensor]]:
    out = {}
    for name, metric in metrics.items():
        out[name] = [metric.compute()]
        if hasattr(metric, "compute_curve"):
            out[name] += [metric.compute_curve(), metric.compute_per_image()]
    return out


def build() -> dict:
    return {name: create_metric(name, TinyNet(), **({"step": 7} if "rise" in name else {})) for name in NAMES}


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        images, maps, labels, masks = make_data()
        part = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
        metrics = build()
        for metric in metrics.values():
            metric.update(images[part], maps[part], labels[part], gt_masks=masks[part])
        values = results(metrics)  # syncs across the two processes
        if rank == 0:
            torch.save(values, out)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_process_ddp_equals_one_process(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    # fork: the children reuse the imported modules (spawn would spend most of the time importing).
    mp.start_processes(worker, args=(free_port(), str(out)), nprocs=WORLD, join=True, start_method="fork")
    distributed = torch.load(out)
    images, maps, labels, masks = make_data()
    metrics = build()
    for metric in metrics.values():
        metric.update(images, maps, labels, gt_masks=masks)
    single = results(metrics)
    assert set(distributed) == set(NAMES)
    for name in NAMES:
        assert len(distributed[name]) == len(single[name])
        for got, expected in zip(distributed[name], single[name]):
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=0, msg=name)

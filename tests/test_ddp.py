"""`trainer=ddp_cpu` (2 processes, gloo) gives the run of one process: the same pretrained explainer,
the same maps and results, each instance explained exactly once by one of the ranks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ltx.stages.runtime import check_processes, make_trainer
from ltx.store import MapKey, MapStore, read_results
from tests.helpers import compose_config, tiny_vit
from tests.test_run import run_ltx

METHODS = ("ltx", "ltx_pretrained", "gradcam")
# 5 instances: rank 0 explains 3, rank 1 explains 2; pretraining batches of 32 = 2 ranks × 16
DDP_RUN = tiny_vit(f"method=[{','.join(METHODS)}]", "method.ltx.steps=2", "explain.num_images=5",
                   "explain.batch_size=2")


def shard_indices(folder: Path) -> dict[int, list[int]]:
    """Instance indices saved by each rank (from the shard names' `-r<rank>` suffix)."""
    found: dict[int, list[int]] = {}
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            found.setdefault(int(shard.stem.rsplit("-r", 1)[1]), []).extend(f.get_tensor("index").tolist())
    return found


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_processes_equal_one_process(tmp_path: Path, cache_dir: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    proc = run_ltx([*DDP_RUN, f"hydra.run.dir={one}"], cache_dir)  # also trains and caches the black box
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_ltx([*DDP_RUN, "trainer=ddp_cpu", f"hydra.run.dir={two}"], cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train_ddp_process_1" in proc.stderr + proc.stdout or (two / "train_ddp_process_1.log").is_file()

    explainer = Path("explainers/textures_vit/predicted.safetensors")
    alone, shared = load_file(str(one / explainer)), load_file(str(two / explainer))
    assert alone.keys() == shared.keys()
    # pretraining: each rank half of every batch, gradients averaged. atol: attention key biases have
    # a zero gradient in exact arithmetic, so AdamW turns rounding noise into steps of ~1e-5 there
    for name in alone:
        torch.testing.assert_close(shared[name], alone[name], atol=1e-4, rtol=1e-4, msg=name)

    for method in METHODS:
        key = MapKey("textures_vit", method, "predicted")
        by_rank = shard_indices(MapStore(two / "maps").folder(key))
        assert sorted(by_rank) == [0, 1] and len(by_rank[0]) == 3 and len(by_rank[1]) == 2
        assert sorted(by_rank[0] + by_rank[1]) == sorted(MapStore(one / "maps").done(key))  # each once
        torch.testing.assert_close(MapStore(two / "maps").load(key)["maps"],
                                   MapStore(one / "maps").load(key)["maps"], atol=1e-4, rtol=1e-3, msg=method)

    single, double = read_results(one / "results.csv"), read_results(two / "results.csv")
    assert [(r["method"], r["metric"]) for r in double] == [(r["method"], r["metric"]) for r in single]
    torch.testing.assert_close(torch.tensor([r["value"] for r in double]),
                               torch.tensor([r["value"] for r in single]), atol=1e-3, rtol=0)


@pytest.mark.parametrize("overrides, message", [
    (["trainer.strategy=ddp_spawn"], "set trainer.strategy=ddp"),
    (["trainer.strategy=ddp_fork"], "set trainer.strategy=ddp"),
    (["explain.num_images=1"], "1 instances cannot be shared by 2 processes"),
    (["pretrain.batch_size=31"], "pretrain.batch_size=31 is the batch in all"),
])
def test_process_setups_the_pipeline_cannot_run_are_refused(overrides: list[str], message: str) -> None:
    cfg = compose_config(tiny_vit("trainer=ddp_cpu", *overrides))
    with pytest.raises(ValueError, match=message):
        check_processes(cfg, make_trainer(cfg), cfg.explain.num_images)


def test_ddp_cpu_is_two_relaunched_processes() -> None:
    cfg = compose_config(tiny_vit("trainer=ddp_cpu"))
    trainer = make_trainer(cfg)
    assert trainer.world_size == 2 and type(trainer.strategy.launcher).__name__ == "_SubprocessScriptLauncher"
    check_processes(cfg, trainer, cfg.explain.num_images)

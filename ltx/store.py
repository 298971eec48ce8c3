"""Everything a run writes, on disk, written atomically: maps as safetensors shards, results as CSV.

Maps of one (backbone, method, class mode) live in a folder of shards, one per predicted batch
(and per rank under DDP). A shard is written to a temporary file and renamed into place, so an
interrupted run leaves only whole shards, and a restarted run skips the instances already saved.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

RESULT_COLUMNS = ("backbone", "method", "class_mode", "metric", "value")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)` then rename onto `path`: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    # clone: safetensors refuses tensors sharing memory (e.g. target-mode classes *are* the labels)
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


@dataclass(frozen=True)
class MapKey:
    backbone: str
    method: str
    class_mode: str

    def __str__(self) -> str:
        return f"{self.backbone}/{self.method}/{self.class_mode}"


class MapStore:
    """Saved explanation maps of a run: `<root>/<backbone>/<method>/<class_mode>/*.safetensors`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, key: MapKey) -> Path:
        return self.root / key.backbone / key.method / key.class_mode

    def write(self, key: MapKey, batch: dict[str, torch.Tensor], *, rank: int = 0, setting: str = "") -> None:
        """Save one predicted batch (`index`, `maps`, `classes`, `labels`, optional extras)."""
        index = batch["index"]
        name = f"{int(index.min()):09d}-{int(index.max()):09d}-r{rank}.safetensors"
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        save_tensors(self.folder(key) / name, tensors, metadata={"setting": setting, "key": str(key)})

    def _shards(self, key: MapKey) -> list[Path]:
        folder = self.folder(key)
        return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []

    def done(self, key: MapKey) -> set[int]:
        """Instance indices whose maps are saved."""
        found: set[int] = set()
        for shard in self._shards(key):
            with safe_open(str(shard), framework="pt") as f:
                found.update(f.get_tensor("index").tolist())
        return found

    def setting(self, key: MapKey) -> str | None:
        """The method settings the maps of `key` were made with (None: no maps saved)."""
        for shard in self._shards(key):
            with safe_open(str(shard), framework="pt") as f:
                return (f.metadata() or {}).get("setting", "")
        return None

    def load(self, key: MapKey) -> dict[str, torch.Tensor]:
        """All shards merged, sorted by instance index, one entry per index."""
        parts: dict[str, list[torch.Tensor]] = {}
        for shard in self._shards(key):
            with safe_open(str(shard), framework="pt") as f:
                for name in f.keys():
                    parts.setdefault(name, []).append(f.get_tensor(name))
        if not parts:
            raise FileNotFoundError(f"no maps saved for {key} under {self.folder(key)}")
        merged = {k: torch.cat(v) for k, v in parts.items()}
        index = merged["index"]
        order = torch.argsort(index, stable=True)
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[order][1:] != index[order][:-1]
        return {k: v[order][keep] for k, v in merged.items()}

    def keys(self) -> list[MapKey]:
        return [MapKey(*p.relative_to(self.root).parts) for p in sorted(self.root.glob("*/*/*")) if p.is_dir()]


class SavedMaps:
    """Random access to one key's saved maps by instance index; reads only the shards asked for.

    The shards present when it is built are indexed; later ones are not seen (their instances
    read as not found)."""

    def __init__(self, store: MapStore, key: MapKey) -> None:
        self.where: dict[int, tuple[Path, int]] = {}
        for shard in store._shards(key):
            with safe_open(str(shard), framework="pt") as f:
                for row, index in enumerate(f.get_tensor("index").tolist()):
                    self.where.setdefault(index, (shard, row))

    def get(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(found (B,) bool, classes (B,) or pairs (B, 2) long, maps (B, ...) or None if none found) for
        instances `index` (B,); rows not found have class -1 and a zero map."""
        found = torch.zeros(len(index), dtype=torch.bool)
        classes = torch.full((len(index),), -1, dtype=torch.long)
        maps = None
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for position, i in enumerate(index.tolist()):
            if i in self.where:
                shard, row = self.where[i]
                by_shard.setdefault(shard, []).append((position, row))
        for shard, pairs in by_shard.items():
            positions, rows = (list(p) for p in zip(*pairs))
            with safe_open(str(shard), framework="pt") as f:
                shard_maps = f.get_tensor("maps")[rows]
                shard_classes = f.get_tensor("classes")[rows].long()
            if maps is None:
                maps = shard_maps.new_zeros((len(index), *shard_maps.shape[1:]))
                classes = classes.new_full((len(index), *shard_classes.shape[1:]), -1)
            classes[positions] = shard_classes
            maps[positions] = shard_maps
            found[positions] = True
        return found, classes, maps


def write_results(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """results.csv in long format: backbone, method, class_mode, metric, value."""
    rows = list(rows)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def read_results(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as f:
        return [{**row, "value": float(row["value"])} for row in csv.DictReader(f)]


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True)))


def metric_key_parts(key: str) -> dict[str, str | None]:
    """Split a result key, `METHOD/CLASS_MODE/METRIC` (mean over the run's backbones) or
    `BACKBONE/METHOD/CLASS_MODE/METRIC`, e.g. `ltx/predicted/neg`; backbone is None in the first."""
    parts = str(key).split("/")
    if len(parts) not in (3, 4) or not all(parts):
        raise ValueError(f"result key {key!r} must be METHOD/CLASS_MODE/METRIC or "
                         "BACKBONE/METHOD/CLASS_MODE/METRIC (e.g. ltx/predicted/neg).")
    return dict(zip(("backbone", "method", "class_mode", "metric"), [None] * (4 - len(parts)) + parts))


def metric_values(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Results by key (see `metric_key_parts`): every `BACKBONE/METHOD/CLASS_MODE/METRIC`, and every
    `METHOD/CLASS_MODE/METRIC` as the mean over the backbones that have it. Used for sweeps."""
    per_backbone: dict[str, float] = {}
    pooled: dict[str, list[float]] = {}
    for row in rows:
        key = f"{row['method']}/{row['class_mode']}/{row['metric']}"
        per_backbone[f"{row['backbone']}/{key}"] = float(row["value"])
        pooled.setdefault(key, []).append(float(row["value"]))
    return {**{k: sum(v) / len(v) for k, v in pooled.items()}, **per_backbone}

"""The settings of a finetuning run (`conf/method/ltx.yaml`), checked once, before any work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SELECT_BY = ("last", "loss", "pos", "neg")
SCOPES = ("all", "head", "lora")
PRECISIONS = ("32", "bf16", "auto")
AUTO = "auto"


def _positive_int(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        return False


@dataclass
class FinetuneSettings:
    """`steps` gradient steps per instance at `lr` (AdamW, `weight_decay`); `steps=0` gives the
    pretrained explainer's map alone (pLTX). `select_by` says which of the steps+1 maps is the
    explanation: the last, the lowest-loss one, or the one with the best POS (lowest) / NEG
    (highest) AUC on that image (the official code's rule, `pos`), stopping an instance early once
    its POS AUC drops below `stop_below`.

    `scope` (all | head | lora, rank `lora_rank`, scale `lora_alpha / lora_rank`) says which
    parameters are tuned per instance (`ltx.finetune.plan`). `instance_batch_size` (int | 'auto' |
    None) splits the images given into groups finetuned together; 'auto' probes once per device
    against `memory_budget` GiB (None: a share of what is available). `precision` ('32' | 'bf16' |
    'auto' = bf16 on CUDA only) and `compile` (bool | 'auto' = on CUDA only) trade exactness for
    speed; maps are returned in the images' dtype (float32 under bf16 too).
    """

    steps: int = 25
    lr: float = 2e-3
    weight_decay: float = 0.01
    select_by: str = "last"
    stop_below: float | None = None
    scope: str = "all"
    lora_rank: int = 8
    lora_alpha: float | None = None
    instance_batch_size: int | str | None = None
    memory_budget: float | None = None
    precision: str | int = "32"
    compile: bool | str = False

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"finetune steps must be >= 0, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"finetune lr must be > 0, got {self.lr}")
        if self.select_by not in SELECT_BY:
            raise ValueError(f"unknown select_by {self.select_by!r}: choose one of {SELECT_BY}")
        if self.scope not in SCOPES:
            raise ValueError(f"unknown finetune scope {self.scope!r}: choose one of {SCOPES}")
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")
        if self.instance_batch_size not in (None, AUTO) and not _positive_int(self.instance_batch_size):
            raise ValueError(f"instance_batch_size must be an int >= 1, 'auto' or null, got "
                             f"{self.instance_batch_size!r}")
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise ValueError(f"memory_budget must be > 0 GiB or null, got {self.memory_budget}")
        self.precision = str(self.precision)
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: choose one of {PRECISIONS}")
        if self.compile not in (True, False, AUTO):
            raise ValueError(f"compile must be true, false or 'auto', got {self.compile!r}")
        self.lora_rank = int(self.lora_rank)
        self.lora_alpha = float(2 * self.lora_rank if self.lora_alpha is None else self.lora_alpha)
        if self.instance_batch_size not in (None, AUTO):
            self.instance_batch_size = int(self.instance_batch_size)

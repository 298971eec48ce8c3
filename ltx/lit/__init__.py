"""The LightningModules of the method (black-box training, pretraining, per-instance finetuning)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Warnings Lightning raises for our fits and predictions that say nothing a user can act on.
EXPECTED_LIGHTNING_WARNINGS = (
    r"Found \d+ module\(s\) in eval mode",  # the frozen explained model stays in eval mode by design
    "You defined a `validation_step` but have no",  # pretraining without validation images
    r"Checkpoint directory .* exists and is not empty",  # a resumed run writes where it stopped
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # raised inside Lightning by newer torch
)


@contextmanager
def expected_lightning_warnings() -> Iterator[None]:
    """Silence EXPECTED_LIGHTNING_WARNINGS (and nothing else) while Lightning fits or predicts."""
    with warnings.catch_warnings():
        for message in EXPECTED_LIGHTNING_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield
